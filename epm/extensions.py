"""The app's shared clients: the database, migrations, sign-in, CSRF, and Redis."""

from __future__ import annotations

import redis
from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# Request-rate limits; set up (storage, limits per route) in epm/limits.py.
limiter = Limiter(get_remote_address)


def init_redis(app: Flask) -> redis.Redis:
    """Create the app's Redis client: a real server at ``REDIS_URL``, else fakeredis in this process.

    Commands time out after ``EPM_REDIS_TIMEOUT`` seconds so a dead Redis turns into a quick 503,
    not a hung request.
    """
    url = app.config["REDIS_URL"]
    if app.config.get("REDIS_SENTINELS"):
        client = _sentinel_client(app)
    elif url:
        timeout = app.config["EPM_REDIS_TIMEOUT"]
        # A blocking pool sized from the connections a worker accepts: in a burst (every tab reopening its
        # event stream after a deploy) a request waits for a connection instead of failing at once.
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=app.config["EPM_REDIS_MAX_CONNECTIONS"],
                                                     timeout=app.config["EPM_REDIS_POOL_TIMEOUT"],
                                                     decode_responses=True, socket_timeout=timeout,
                                                     socket_connect_timeout=timeout, health_check_interval=30,
                                                     driver_info=_driver_info())
        client = redis.Redis.from_pool(pool)
    else:
        import fakeredis

        client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    app.extensions["redis"] = client
    return client


@event.listens_for(Engine, "connect")
def _sqlite_enforces_foreign_keys(dbapi_connection, _record) -> None:
    """SQLite ignores ON DELETE (a deleted session's programs keep a stale id) unless told per connection."""
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _sentinel_client(app: Flask) -> redis.Redis:
    """A client of the master that Redis Sentinel names, found again by asking the sentinels after a failover.

    ``REDIS_URL``, when set, still gives the database number, user name and password.
    """
    from urllib.parse import urlsplit

    from redis.sentinel import Sentinel

    master = app.config.get("REDIS_SENTINEL_MASTER")
    if not master:
        raise ValueError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: name the monitored master "
                         "(as in the sentinels' 'sentinel monitor <name> ...' line)")
    timeout = app.config["EPM_REDIS_TIMEOUT"]
    parts = urlsplit(app.config["REDIS_URL"] or "redis://")
    path = parts.path.strip("/")
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sentinel = Sentinel(app.config["REDIS_SENTINELS"], sentinel_kwargs=dict(options), **options)
    return sentinel.master_for(master, db=int(path) if path.isdigit() else 0, username=parts.username or None,
                               password=parts.password or None, decode_responses=True,
                               health_check_interval=30, driver_info=_driver_info())


def _driver_info():
    """What each new Redis connection tells the server about its client (``CLIENT SETINFO``), resolved once.

    Left to redis-py, every new connection reads the installed package's metadata from disk to learn its
    own version: a burst of stream opens, each needing a connection, spent a sixth of the worker's CPU on it.
    """
    from redis.driver_info import DriverInfo
    from redis.utils import get_lib_version

    global _DRIVER_INFO
    if _DRIVER_INFO is None:
        _DRIVER_INFO = DriverInfo(name="redis-py", lib_version=get_lib_version())
    return _DRIVER_INFO


_DRIVER_INFO = None


def get_redis() -> redis.Redis:
    return current_app.extensions["redis"]


def describe_backends(app: Flask) -> str:
    """One line naming the Redis and database in use, with passwords hidden."""
    from sqlalchemy.engine import make_url

    redis_url = app.config["REDIS_URL"]
    redis_desc = _hide_password(redis_url) if redis_url else "embedded fakeredis (in this process only)"
    if app.config.get("REDIS_SENTINELS"):
        redis_desc = (f"master {app.config.get('REDIS_SENTINEL_MASTER')!r} through the sentinels "
                      + ",".join(f"{host}:{port}" for host, port in app.config["REDIS_SENTINELS"]))
    db_url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    db_desc = db_url.render_as_string(hide_password=True)
    if db_url.get_backend_name() == "sqlite":
        db_desc = f"embedded SQLite at {db_url.database}"
    return f"Redis: {redis_desc}; database: {db_desc}"


def _hide_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
