"""epm: long operations as tracked jobs that keep running when the user leaves."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask

from . import api_schema, errors, limits, logs, memtrace, metrics, security
from . import config as config_module
from .extensions import csrf, db, describe_backends, init_redis, login_manager, migrate
from .jobs.sse import HandOverStreams

MIGRATIONS = str(Path(__file__).parent / "migrations")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings, extensions, the job system, operations, pages, error handlers."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(config_module.load())
    if config:
        app.config.update(config)
    os.makedirs(app.instance_path, exist_ok=True)
    if app.config["SECRET_KEY_GENERATED"] and not app.config.get("TESTING"):
        app.config["SECRET_KEY"] = _instance_secret(app)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "epm.sqlite")
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # The pool settings are PostgreSQL's: SQLite's own pools (one file, or one in-memory database) stay.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {key: value for key, value in app.config["SQLALCHEMY_ENGINE_OPTIONS"]
                                                   .items() if key not in config_module.POOL_OPTIONS}

    logs.init_app(app)
    memtrace.init_app(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    login_manager.init_app(app)
    csrf.init_app(app)
    if "redis" not in app.extensions:
        init_redis(app)

    from . import jobs, operations, web  # noqa: F401  (operations register themselves on import)
    from .operations import demo
    from .web import auth, proxy

    demo.init_app(app)
    jobs.init_app(app, current_user_id=auth.current_user_id)
    metrics.init_app(app)
    web.init_app(app)
    auth.init_app(app)
    limits.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    app.register_blueprint(api_schema.bp)
    proxy.init_app(app)
    # Outermost: an event stream leaves its greenlet once its head is out (see EventStream.hand_over).
    app.wsgi_app = HandOverStreams(app.wsgi_app)

    log = logging.getLogger("epm")
    log.info("epm starting: %s", describe_backends(app))
    if app.config["SECRET_KEY_GENERATED"] and app.config["REDIS_URL"]:
        log.warning("SECRET_KEY is not set: using the instance folder's key, which other instances "
                    "do not share; set SECRET_KEY when running more than one")
    if app.config["EPM_MAINTENANCE"] and not app.config.get("TESTING"):
        app.extensions["epm.upkeep"].start()
    return app


def _instance_secret(app: Flask) -> str:
    """The embedded default's secret key, kept in the instance folder so sign-ins survive restarts."""
    path = Path(app.instance_path) / "secret_key"
    if not path.exists():
        import secrets

        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
