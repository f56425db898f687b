"""Fault tests on real gunicorn+gevent servers: PostgreSQL stopped, Redis restarted, flushed and hung.

The servers run on our own Redis and PostgreSQL (tests/fault_support.py), which these tests stop,
restart, flush and freeze; the machine's shared servers are never touched.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fault_support import (
    Backends,
    flask_jobs,
    job_state,
    start_demo,
    wait_running,
    wait_terminal,
)
from tests.support import wait_for

pytestmark = pytest.mark.live


def outbox_depth(backends: Backends, env: dict[str, str]) -> int:
    with backends.redis.client() as client:
        return client.zcard(f"{env['EPM_KEY_PREFIX']}outbox")


# -- PostgreSQL down -------------------------------------------------------------------------------------

def test_fifty_jobs_ending_while_postgres_is_down_are_each_written_once_when_it_is_back(backends, fleet):
    env = backends.env()
    server = fleet.server(env, workers=2)
    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(lambda _: fleet.user(server.url), range(51)))
        # 12 s each: all still running when the database goes, however slowly a busy machine starts 50 of them
        jobs = list(pool.map(lambda user: start_demo(user, steps=6, step_seconds=2.0)[0], users[:50]))
    ids = [job["id"] for job in jobs]
    backends.postgres.stop()
    try:
        assert outbox_depth(backends, env) == 0, "every job was still running when the database went"
        began = time.monotonic()
        refused = users[50].post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {}})
        assert refused.status_code == 503 and time.monotonic() - began < 5
        assert refused.json()["error"]["code"] == "database_unavailable"
        assert "database" in refused.json()["error"]["message"]
        wait_for(lambda: outbox_depth(backends, env) == 50, 60, 0.1, "all 50 terminal states in the outbox")
        seen = job_state(users[0], ids[0])
        assert seen["status"] == "completed", "the user still sees how the job ended"
    finally:
        backends.postgres.start()

    rows = wait_for(lambda: (found := backends.rows(ids)) and all(r["status"] == "completed" for r in found.values())
                    and len(found) == 50 and found, 60, 0.1, "the outbox to be written to the database")
    for job_id, row in rows.items():
        live = backends.live_job(env, job_id)
        assert (row["progress"], row["result"]["steps"]) == (100, 6)
        assert row["completed_at"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == live["completed_at"]
    assert outbox_depth(backends, env) == 0
    written = Counter(re.findall(r"outbox: job (\w+) written to the database", server.log_path.read_text()))
    assert set(written) == set(ids) and set(written.values()) == {1}, "each terminal state written exactly once"
    assert "written 0; still waiting 0" in flask_jobs(env, "flush"), "nothing is written twice"
    user_ids = {row["user_id"] for row in rows.values()}
    with __import__("psycopg").connect(backends.database_url) as conn:
        count = conn.execute("SELECT count(*) FROM background_jobs WHERE user_id = ANY(%s)", (list(user_ids),))
        assert count.fetchone()[0] == 50, "one row per job, none twice"


def test_flask_jobs_flush_writes_the_outbox_when_no_server_does(backends, fleet):
    env = backends.env(EPM_MAINTENANCE="0")
    server = fleet.server(env, workers=1)
    users = [fleet.user(server.url) for _ in range(3)]
    ids = [start_demo(user, steps=4, step_seconds=0.4)[0]["id"] for user in users]
    backends.postgres.stop()
    try:
        wait_for(lambda: outbox_depth(backends, env) == 3, 15, 0.1, "the terminal states in the outbox")
    finally:
        backends.postgres.start()
    assert {row["status"] for row in backends.rows(ids).values()} == {"pending"}, "no background flusher here"

    assert "written 3; still waiting 0" in flask_jobs(env, "flush")
    assert {row["status"] for row in backends.rows(ids).values()} == {"completed"}
    assert "written 0; still waiting 0" in flask_jobs(env, "flush")


# -- Redis down, restarted, flushed, hung -----------------------------------------------------------------

def test_a_job_survives_a_redis_restart_and_the_api_answers_503_while_redis_is_down(backends, fleet):
    env = backends.env()
    server = fleet.server(env, workers=2)
    user = fleet.user(server.url)
    stream = fleet.stream(server.url, user)
    job, _ = start_demo(user, steps=12, step_seconds=0.3)
    wait_running(user, job["id"])
    backends.redis.stop()  # without persistence: everything in it is lost
    try:
        for path in ("/api/background-jobs", f"/api/background-jobs/{job['id']}", "/api/background-jobs/events"):
            began = time.monotonic()
            answer = user.get(path)
            assert answer.status_code == 503, (path, answer.status_code, answer.text[:200])
            assert answer.json()["error"]["code"] == "redis_unavailable" and time.monotonic() - began < 1.5
        assert user.get("/healthz").status_code == 200
        time.sleep(1.0)  # the outage lasts a while; the job goes on meanwhile
    finally:
        backends.redis.start()

    done = wait_terminal(user, job["id"])
    assert (done["status"], done["progress"], done["result"]["steps"]) == ("completed", 100, 12)
    assert backends.rows([job["id"]])[job["id"]]["status"] == "completed"
    assert user.get("/api/background-jobs").json()["jobs"][0]["status"] == "completed"
    wait_for(lambda: stream.saw(job["id"], status="completed"), 10, message="the user's stream to show the end")


def test_after_a_flushall_running_jobs_write_themselves_back_and_finished_ones_come_back_from_postgres(
        backends, fleet):
    env = backends.env()
    server = fleet.server(env, workers=2)
    user = fleet.user(server.url)
    finished, _ = start_demo(user, steps=1)
    wait_terminal(user, finished["id"])
    running, _ = start_demo(user, steps=10, step_seconds=0.3)
    wait_running(user, running["id"])
    with backends.redis.client() as client:
        # The flush and the look are one transaction: any worker's next upkeep round may put the finished
        # job back at once (that is what this test is about), so a look after the flush could see it already.
        pipe = client.pipeline(transaction=True)
        pipe.flushall()
        pipe.exists(f"{env['EPM_KEY_PREFIX']}job:{finished['id']}")
        assert pipe.execute()[1] == 0, "the flush took the finished job's hash"

    done = wait_terminal(user, running["id"])
    assert (done["status"], done["progress"]) == ("completed", 100)
    assert backends.rows([running["id"]])[running["id"]]["status"] == "completed"
    assert job_state(user, finished["id"])["status"] == "completed"
    # Reconciliation puts the finished job back into Redis, so a new stream's snapshot shows both.
    wait_for(lambda: backends.live_job(env, finished["id"]).get("status") == "completed", 5, 0.1,
             "the finished job restored from PostgreSQL")
    stream = fleet.stream(server.url, user, reconnect=False)
    wait_for(lambda: stream.saw(finished["id"], status="completed") and stream.saw(running["id"], status="completed"),
             5, message="both jobs in the snapshot")


def test_a_hung_redis_gets_a_quick_503_and_the_job_carries_on_when_it_answers_again(backends, fleet):
    env = backends.env(EPM_REDIS_TIMEOUT="1")
    server = fleet.server(env, workers=1)
    user = fleet.user(server.url)
    job, _ = start_demo(user, steps=10, step_seconds=0.3)
    wait_running(user, job["id"])
    backends.redis.pause()
    try:
        began = time.monotonic()
        answer = user.get("/api/background-jobs")
        waited = time.monotonic() - began
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "redis_unavailable"
        assert waited < 2.0, f"answered after {waited:.1f}s"
    finally:
        backends.redis.resume()

    done = wait_terminal(user, job["id"])
    assert (done["status"], done["progress"]) == ("completed", 100)
    assert backends.rows([job["id"]])[job["id"]]["status"] == "completed"
