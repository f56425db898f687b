"""Fixtures: the app on each backend, a signed-in client, real servers.

Tests that take ``app`` run twice over: on the embedded default (fakeredis + SQLite) and, when
``REDIS_URL`` and ``DATABASE_URL`` are set, on real Redis and PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from epm import create_app
from epm.extensions import db
from epm.models import User
from tests.support import LiveServer, PostgresDatabase, real_backends, upgrade_database

# The fault tests' fixtures (``backends``: a redis-server and a PostgreSQL cluster of their own; ``fleet``).
pytest_plugins = ["tests.fault_support"]

BACKENDS = ["embedded", "real"]

# The test operation demo_countdown exists only with EPM_DEMO=1; request-rate limits are off unless a test
# turns them on (tests/test_security_*.py do). Set here so every server and CLI the tests start inherits them.
os.environ.setdefault("EPM_DEMO", "1")
os.environ.setdefault("EPM_RATE_LIMITS", "0")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this run (skipped without DATABASE_URL)."""
    backends = real_backends()
    if backends is None:
        pytest.skip("real backends not configured: set REDIS_URL and DATABASE_URL (.ci/run does)")
    database = PostgresDatabase(backends[1])
    upgrade_database(database.url)
    yield database.url
    database.drop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    backends = real_backends()
    if backends is None:
        pytest.skip("real backends not configured: set REDIS_URL and DATABASE_URL (.ci/run does)")
    return backends[0]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> str:
    """A migrated SQLite file, copied for each test instead of migrating each time."""
    path = tmp_path_factory.mktemp("db") / "template.sqlite"
    upgrade_database(f"sqlite:///{path}")
    return str(path)


def _test_config(**overrides) -> dict:
    config = {
        "TESTING": True,
        "SECRET_KEY": "test",
        "WTF_CSRF_ENABLED": False,
        "EPM_MAINTENANCE": False,
        "EPM_STAGE_SECONDS": 0,
        "EPM_KEY_PREFIX": f"epmtest:{uuid.uuid4().hex[:8]}:",
        "LOG_LEVEL": "WARNING",
    }
    config.update(overrides)
    return config


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def app(request, backend, tmp_path, sqlite_template):
    """The app on the embedded default, then on real Redis and PostgreSQL."""
    import shutil

    config = _test_config()
    if backend == "real":
        config["REDIS_URL"] = request.getfixturevalue("redis_url")
        from epm.config import database_uri

        config["SQLALCHEMY_DATABASE_URI"] = database_uri(request.getfixturevalue("postgres_url"))
    else:
        config["REDIS_URL"] = None
        path = tmp_path / "epm.sqlite"
        shutil.copy(sqlite_template, path)
        config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
    app = create_app(config)
    yield app
    service = app.extensions["epm.jobs"]
    service.runner.shutdown(grace=5)
    with app.app_context():
        db.session.remove()
        if backend == "real":
            for table in reversed(db.metadata.sorted_tables):
                db.session.execute(table.delete())
            db.session.commit()
            db.engine.dispose()
    client = app.extensions["redis"]
    if backend == "real":
        keys = list(client.scan_iter(match=config["EPM_KEY_PREFIX"] + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def client(app):
    return app.test_client()


def make_user(app, username: str | None = None, password: str = "password123") -> User:
    with app.app_context():
        user = User(username=username or f"user{uuid.uuid4().hex[:8]}")
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
        db.session.refresh(user)
        db.session.expunge(user)
        return user


@pytest.fixture
def user(app) -> User:
    return make_user(app, "alice")


def sign_in(app, client, user_id) -> None:
    """Give ``client`` the session cookie of ``user_id``, with the account's current session token."""
    from epm.web.auth import AUTH_KEY, session_token

    with app.app_context():
        token = session_token(user_id)
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["_fresh"] = True
        session[AUTH_KEY] = token


@pytest.fixture
def auth_client(app, user):
    """A test client signed in as ``user``."""
    client = app.test_client()
    sign_in(app, client, user.id)
    return client


@pytest.fixture
def plain_redis(app) -> redis.Redis:
    """A plain Redis client on the app's server: for reading keys the way an operator does."""
    if app.config["REDIS_URL"]:
        client = redis.Redis.from_url(app.config["REDIS_URL"], decode_responses=True)
        yield client
        client.close()
    else:
        yield app.extensions["redis"]


def pytest_collection_modifyitems(config, items) -> None:
    """Every test gets a node id of its own. Schemathesis gives each operation's case of a ``parametrize()``d
    test the function's node id (the operation is only in its name); pytest-xdist schedules by node id and
    would run one of the fourteen. A node id seen twice fails the run rather than dropping a test."""
    for item in items:
        if type(item).__name__ == "SchemathesisFunction" and "[" in item.name and not item.nodeid.endswith("]"):
            if hasattr(item, "_id"):  # pytest 9: the structured id, its parent's with this item's name
                item._id = item.parent.id.child(item.name)
            else:
                item._nodeid = f"{item.nodeid}[{item.name.split('[', 1)[1]}"
    seen: set[str] = set()
    twice = {item.nodeid for item in items if item.nodeid in seen or seen.add(item.nodeid)}
    if twice:
        raise pytest.UsageError(f"tests with the same node id (pytest-xdist would run one of each): {sorted(twice)}")


def pytest_report_header(config) -> list[str]:
    backends = real_backends()
    lines = [f"epm backends: embedded{' + real (' + backends[0] + ', PostgreSQL)' if backends else ' only'}"]
    if os.environ.get("EPM_BROWSER_TESTS") == "0":
        lines.append("epm browser tests: off (EPM_BROWSER_TESTS=0)")
    return lines


@pytest.fixture(scope="module")
def backend_env(request, tmp_path_factory):
    """``backend_env(name, **settings)``: the environment of a live server for this module, on real Redis and
    PostgreSQL when configured, else on the embedded default (a migrated SQLite file of its own)."""

    def build(name: str, **settings: str) -> dict[str, str]:
        env = {"SECRET_KEY": name, "EPM_KEY_PREFIX": f"epm{name}:{uuid.uuid4().hex[:8]}:", **settings}
        if real_backends():
            env["REDIS_URL"] = real_backends()[0]
            env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
        else:
            env["REDIS_URL"] = ""
            env["DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp(name) / 'epm.sqlite'}"
            upgrade_database(env["DATABASE_URL"])
        return env

    return build


@pytest.fixture(scope="module")
def start_server(backend_env):
    """``start_server(name, workers=1, **settings)``: a gunicorn+gevent server on ``backend_env``, stopped at
    the module's end."""
    started: list[LiveServer] = []

    def start(name: str, workers: int = 1, **settings: str) -> LiveServer:
        started.append(LiveServer(backend_env(name, **settings), workers=workers).start())
        return started[-1]

    yield start
    for live in started:
        live.stop()
