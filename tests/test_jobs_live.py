"""The job core on real gunicorn+gevent servers: SSE streams, two instances, live state in Redis."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from tests.support import Browserish, LiveServer, wait_for

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server_env(backend_env):
    """Environment for servers of this module: real Redis/PostgreSQL when configured, else embedded."""
    return backend_env("live", EPM_SSE_HEARTBEAT="0.5", LOG_LEVEL="WARNING", EPM_MAINTENANCE_INTERVAL="1")


@pytest.fixture(scope="module")
def server(server_env):
    with LiveServer(server_env, workers=2 if server_env["REDIS_URL"] else 1).start() as live:
        yield live


@pytest.fixture
def user(server):
    with Browserish(server.url).signup() as client:
        yield client


def collect(client, path, into, until_terminal=True, headers=None, stop=None):
    for event in client.events(path, headers=headers):
        into.append(event)
        if stop is not None and stop(into):
            return
        if until_terminal and event.get("event") == "job" and event["data"]["terminal"]:
            return


def test_job_stream_before_during_and_after_sees_increasing_seq_ending_terminal(user):
    job = user.start_demo(steps=8, step_seconds=0.15)
    path = f"/api/background-jobs/{job['id']}/events"
    early: list[dict] = []
    reader = threading.Thread(target=collect, args=(user, path, early))
    reader.start()
    wait_for(lambda: any(e.get("data", {}).get("progress", 0) >= 25 for e in early), message="mid-job progress")
    during: list[dict] = []
    collect(user, path, during)
    reader.join(10)
    after: list[dict] = []
    collect(user, path, after)

    for events in (early, during, after):
        jobs = [e for e in events if e.get("event") == "job"]
        seqs = [int(e["id"]) for e in jobs]
        assert seqs == sorted(set(seqs)), "seq must strictly increase"
        assert all(int(e["id"]) == e["data"]["seq"] for e in jobs)
        assert jobs[-1]["data"]["status"] == "completed" and jobs[-1]["data"]["progress"] == 100
    assert len([e for e in early if e.get("event") == "job"]) >= 5, "the early client sees the progress live"
    assert len([e for e in after if e.get("event") == "job"]) == 1, "after the end: the snapshot, then the end"


def test_reconnect_with_last_event_id_misses_nothing_that_matters(user):
    job = user.start_demo(steps=10, step_seconds=0.15)
    path = f"/api/background-jobs/{job['id']}/events"
    first: list[dict] = []
    collect(user, path, first, stop=lambda evs: sum(1 for e in evs if e.get("event") == "job") >= 3)
    last_id = [e for e in first if e.get("event") == "job"][-1]["id"]
    rest: list[dict] = []
    collect(user, path, rest, headers={"Last-Event-ID": last_id})
    jobs = [e for e in rest if e.get("event") == "job"]
    assert all(int(e["id"]) > int(last_id) for e in jobs), "nothing older than Last-Event-ID is re-sent"
    assert jobs[-1]["data"]["status"] == "completed"


def test_user_stream_sends_a_snapshot_then_live_events_and_keepalives(user):
    done = user.start_demo(steps=1)
    wait_for(lambda: user.get(f"/api/background-jobs/{done['id']}").json()["job"]["terminal"])
    events: list[dict] = []
    started: dict = {}

    def until(evs):
        if not started and any(e.get("event") == "job" for e in evs):
            started.update(user.start_demo(steps=3, step_seconds=0.1))
        return any(e.get("event") == "job" and e["data"]["id"] == started.get("id") and e["data"]["terminal"]
                   for e in evs) and any("comment" in e for e in evs)

    collect(user, "/api/background-jobs/events", events, until_terminal=False, stop=until)
    jobs = [e["data"] for e in events if e.get("event") == "job"]
    assert jobs[0]["id"] == done["id"] and jobs[0]["status"] == "completed", "snapshot first"
    assert [j["status"] for j in jobs if j["id"] == started["id"]][-1] == "completed"


def test_stream_responses_carry_the_headers_proxies_need(user, server):
    import httpx

    job = user.start_demo(steps=1)
    with user.http.stream("GET", f"/api/background-jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
    with httpx.stream("GET", server.url + "/api/background-jobs/events") as anonymous:
        assert anonymous.status_code == 401


def test_an_open_stream_is_handed_to_the_hub_and_ends_cleanly(user):
    """Under gunicorn's gevent worker the stream's head is sent by epm itself (no ``Server: gunicorn``; the
    connection closes when the stream ends) and the stream is left to the hub, without a greenlet."""
    job = user.start_demo(steps=4, step_seconds=0.4)
    with user.http.stream("GET", f"/api/background-jobs/{job['id']}/events") as response:
        assert response.headers["connection"] == "close" and "server" not in response.headers
        assert response.headers["transfer-encoding"] == "chunked"
        assert "x-request-id" in response.headers  # the app's own headers are all there
        lines = list(response.iter_lines())
    # The last chunk came (httpx raises on a chunked body cut short) after the terminal event; between, the
    # hub wrote the live events and its keep-alives (every 0.5 s here).
    states = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    # The snapshot may come before the runner's first write on a busy machine: the job is then still pending.
    assert states[0]["status"] in ("pending", "running") and states[-1]["status"] == "completed"
    assert any(s["status"] == "running" for s in states)
    assert [s["seq"] for s in states] == sorted(s["seq"] for s in states) and len(states) >= 4
    assert ": keep-alive" in lines


def test_past_its_share_of_handed_over_streams_a_worker_keeps_a_greenlet_per_stream(server_env):
    with (LiveServer({**server_env, "EPM_STREAMS_PER_WORKER": "1"}).start() as live,
          Browserish(live.url).signup() as person,
          person.http.stream("GET", "/api/background-jobs/events") as first,
          person.http.stream("GET", "/api/background-jobs/events") as second):
        assert first.headers["connection"] == "close"  # handed to the hub
        assert second.headers["connection"] == "keep-alive" and second.headers["server"] == "gunicorn"
        job = person.start_demo(steps=1)
        for response in (first, second):  # both streams carry the job to its end
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("status") == "completed":
                    assert json.loads(line[6:])["id"] == job["id"]
                    break


@pytest.mark.real_backends
def test_redis_hash_shows_the_live_state_to_an_operator(user, server_env):
    if not server_env["REDIS_URL"]:
        pytest.skip("needs real Redis (REDIS_URL)")
    job = user.start_demo(steps=20, step_seconds=0.1)
    plain = redis.Redis.from_url(server_env["REDIS_URL"], decode_responses=True)
    key = f"{server_env['EPM_KEY_PREFIX']}job:{job['id']}"
    live = wait_for(lambda: (h := plain.hgetall(key)) and h["status"] == "running" and int(h["progress"]) > 0 and h,
                    message="a running job's hash")
    assert live["job_type"] == "demo_countdown" and live["message"].startswith("Step ")
    assert plain.zscore(f"{server_env['EPM_KEY_PREFIX']}jobs:active", job["id"]) is not None
    final = wait_for(lambda: (h := plain.hgetall(key)) and h["status"] == "completed" and h)
    assert final["progress"] == "100"
    wait_for(lambda: plain.ttl(key) > 0, message="the finished hash to get its retention TTL")
    plain.close()


@pytest.mark.real_backends
def test_a_job_started_on_one_instance_is_followed_live_on_another(server_env, server):
    if not server_env["REDIS_URL"]:
        pytest.skip("two instances need shared Redis and PostgreSQL (REDIS_URL, DATABASE_URL)")
    with LiveServer(server_env, workers=1).start() as other:
        on_first = Browserish(server.url).signup()
        on_second = Browserish(other.url, username=on_first.username, password=on_first.password).login()
        job = on_first.start_demo(steps=8, step_seconds=0.15)
        events: list[dict] = []
        collect(on_second, f"/api/background-jobs/{job['id']}/events", events)
        jobs = [e["data"] for e in events if e.get("event") == "job"]
        assert len(jobs) >= 4, "followed live, not just the end"
        assert jobs[-1]["status"] == "completed"
        listed = on_second.get("/api/background-jobs").json()["jobs"]
        assert listed[0]["id"] == job["id"] and listed[0]["status"] == "completed"
