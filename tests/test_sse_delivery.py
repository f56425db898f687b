"""The event streams' delivery path: one decode per event per process, queued events sent as one chunk,
keep-alives from one timer per process, and an answer an EventSource understands when a stream cannot open."""

from __future__ import annotations

import json
import threading

from epm import signals
from epm.config import load
from epm.jobs.sse import stream
from tests.support import wait_for


def _event(job_id: str, seq: int) -> str:
    return json.dumps({"id": job_id, "seq": seq, "terminal": False, "status": "running", "progress": seq})


def _open(hub, channel: str):
    body = stream(hub, [channel], snapshot=list)
    chunks = iter(body)
    assert next(chunks) == b"retry: 2000\n\n"
    return body, chunks


def test_events_queued_while_a_stream_was_busy_go_out_as_one_chunk(app, plain_redis):
    hub = app.extensions["epm.hub"]
    channel = app.config["EPM_KEY_PREFIX"] + "burst"
    body, chunks = _open(hub, channel)
    for seq in range(1, 6):
        plain_redis.publish(channel, _event("j1", seq))
    wait_for(lambda: len(body._sub.pending) == 5, message="five events queued for the stream")
    chunk = next(chunks)
    assert chunk.count(b"event: job\n") == 5 and chunk.index(b"id: 1\n") < chunk.index(b"id: 5\n")
    assert hub.delivered == 5
    body.close()


def test_an_event_is_decoded_once_per_process_whatever_the_number_of_streams(app, plain_redis):
    hub = app.extensions["epm.hub"]
    channel = app.config["EPM_KEY_PREFIX"] + "fanout"
    opened = [_open(hub, channel) for _ in range(3)]
    seen = []

    def on_delivered(message, **_):
        seen.append(message)

    signals.event_delivered.connect(on_delivered)
    try:
        plain_redis.publish(channel, _event("j2", 7))
        received = [next(chunks) for _, chunks in opened]
    finally:
        signals.event_delivered.disconnect(on_delivered)
    assert len(seen) == 1, "one signal per event and process, not one per stream"
    assert len({id(chunk) for chunk in received}) == 1, "every stream sends the same bytes, rendered once"
    assert hub.delivered == 3
    for body, _ in opened:
        body.close()


def test_keep_alives_come_from_one_timer_for_all_streams(app):
    hub = app.extensions["epm.hub"]
    hub.heartbeat = 0.1  # read when the hub's timer starts, with the first stream
    channel = app.config["EPM_KEY_PREFIX"] + "quiet"
    opened = [_open(hub, channel) for _ in range(3)]
    for _, chunks in opened:
        assert next(chunks) == b": keep-alive\n\n"
    timers = [t for t in threading.enumerate() if t.name == f"epm-event-hub-beat-{id(hub):x}" and t.is_alive()]
    assert len(timers) == 1
    assert hub.delivered == 0, "keep-alives are not events"
    for body, _ in opened:
        body.close()


def test_a_stream_that_cannot_open_tells_an_eventsource_when_to_retry(app, auth_client, backend):
    if backend != "embedded":
        return  # takes the in-process Redis down; the real one is taken down in test_pubsub_reconnect.py
    app.extensions["redis"].connection_pool.connection_kwargs["server"].connected = False
    response = auth_client.get("/api/background-jobs/events", headers={"Accept": "text/event-stream"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    text = response.get_data(as_text=True)
    assert text.startswith("retry: 5000\n\n")
    assert "event: unavailable\n" in text
    data = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
    assert data["error"]["code"] == "redis_unavailable"
    assert app.extensions["epm.hub"].streams == 0
    plain = auth_client.get("/api/background-jobs/events")
    assert plain.status_code == 503 and plain.json["error"]["code"] == "redis_unavailable"


def test_the_redis_pool_is_sized_from_the_connections_a_worker_accepts():
    assert load({})["EPM_REDIS_MAX_CONNECTIONS"] == 1000
    assert load({"EPM_WORKER_CONNECTIONS": "300"})["EPM_REDIS_MAX_CONNECTIONS"] == 300
    assert load({"EPM_REDIS_MAX_CONNECTIONS": "50"})["EPM_REDIS_MAX_CONNECTIONS"] == 50


def test_a_one_job_stream_takes_only_its_jobs_events_from_the_users_channel(app, plain_redis):
    hub = app.extensions["epm.hub"]
    channel = app.config["EPM_KEY_PREFIX"] + "owner"
    body = stream(hub, [channel], snapshot=list, job_id="mine")
    chunks = iter(body)
    assert next(chunks) == b"retry: 2000\n\n"
    plain_redis.publish(channel, _event("other", 1))
    plain_redis.publish(channel, _event("mine", 2))
    chunk = next(chunks)
    assert b'"id": "mine"' in chunk and b'"other"' not in chunk
    assert hub.delivered == 1
    body.close()
