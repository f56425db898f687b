"""The per-process pub/sub connection comes back by itself: no stream is refused while Redis is up.

On a redis-server of our own (tests/fault_support.py) that the tests restart, losing its data as a crash
would; the machine's shared Redis is never touched.
"""

from __future__ import annotations

import shutil
import threading

import pytest

from epm import create_app
from epm.extensions import db
from tests.conftest import _test_config, make_user, sign_in
from tests.fault_support import RedisServer
from tests.support import wait_for

EVENTS = "/api/background-jobs/events"


@pytest.fixture(scope="module")
def own_redis():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def app(own_redis, tmp_path, sqlite_template):
    path = tmp_path / "epm.sqlite"
    shutil.copy(sqlite_template, path)
    app = create_app(_test_config(REDIS_URL=own_redis.url, SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}",
                                  EPM_PUBSUB_HEALTH_CHECK=0.5, EPM_REDIS_TIMEOUT=1.0))
    yield app
    app.extensions["epm.jobs"].runner.shutdown(grace=5)
    with app.app_context():
        db.session.remove()
    app.extensions["redis"].close()


@pytest.fixture
def signed_in(app):
    user = make_user(app)
    client = app.test_client()
    sign_in(app, client, user.id)
    return client, str(user.id)


def test_the_first_stream_on_an_idle_worker_after_a_redis_restart_answers_200(app, own_redis, signed_in):
    client, _ = signed_in
    first = client.get(EVENTS, buffered=False)
    assert first.status_code == 200
    first.close()  # the worker is idle again: no stream open
    own_redis.restart()
    again = client.get(EVENTS, buffered=False)
    assert again.status_code == 200, again.get_data(as_text=True)
    again.close()
    assert app.extensions["epm.hub"].streams == 0


def test_a_stream_open_across_a_redis_restart_gets_the_events_published_after_it(app, own_redis, signed_in):
    client, user_id = signed_in
    held = client.get(EVENTS, buffered=False)
    assert held.status_code == 200
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(held.response), daemon=True)
    reader.start()
    wait_for(lambda: any(b"retry:" in chunk for chunk in received), message="the stream's first bytes")
    own_redis.restart()
    newcomer = client.get(EVENTS, buffered=False)
    assert newcomer.status_code == 200, newcomer.get_data(as_text=True)
    newcomer.close()
    store = app.extensions["epm.jobs"].store
    publisher = own_redis.client()

    def published_and_seen() -> bool:
        # Published until the hub's fresh connection follows the channel again and hands it on.
        payload = '{"id":"after-restart","seq":1,"terminal":false,"status":"running"}'
        publisher.publish(store.user_channel(user_id), payload)
        return any(b"after-restart" in chunk for chunk in received)

    wait_for(published_and_seen, 15, 0.2, "an event published after the restart to reach the open stream")
    publisher.close()
    app.extensions["epm.hub"].close()  # ends the held stream, as a stopping worker does
    reader.join(5)
    held.close()
