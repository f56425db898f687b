"""A worker's boot does what a first request would otherwise do on the gevent loop (epm/warmup.py)."""

from __future__ import annotations

import gc

from epm.warmup import warm


def test_warm_compiles_every_template_and_freezes_the_boot_heap(app, monkeypatch):
    try:
        done = warm(app)
        names = app.jinja_env.list_templates()
        assert done["templates"] == len(names) >= 15
        assert gc.get_freeze_count() > 10_000, "the app's long-lived objects are out of the collector's reach"

        def compile_again(*args, **kwargs):
            raise AssertionError("a template was compiled after the boot")

        monkeypatch.setattr(app.jinja_env, "compile", compile_again)
        for name in names:
            app.jinja_env.get_template(name)  # from the cache: no compile
    finally:
        gc.unfreeze()


def test_warm_makes_the_unknown_username_hash_so_no_sign_in_does(app, monkeypatch):
    from epm.web import auth

    auth.unknown_user_hash.cache_clear()
    try:
        warm(app)

        def hash_again(*args, **kwargs):
            raise AssertionError("the unknown-username hash was made after the boot")

        monkeypatch.setattr(auth, "generate_password_hash", hash_again)
        with app.app_context():
            assert auth.authenticate("nobody-by-this-name", "a-password") is None
    finally:
        gc.unfreeze()
