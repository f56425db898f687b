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
