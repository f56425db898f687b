"""Automatic resume on real gunicorn+gevent servers: workers killed, instances stopped, Redis emptied,
PostgreSQL stopped.

Two instances share our own Redis and PostgreSQL (tests/fault_support.py), with a 2 s heartbeat
timeout and upkeep every 0.5 s. A job whose process goes is resumed by a surviving one: same id,
attempt 2, one row, and no action of its user.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.fault_support import (
    Backends,
    job_state,
    start_demo,
    users_on,
    wait_resumed,
    wait_running,
    wait_terminal,
)
from tests.support import wait_for

pytestmark = pytest.mark.live

HEARTBEAT_TIMEOUT = 2.0
PERIOD = 0.5
# When the killed process held the upkeep lock, another takes it once it expires (3 periods).
LOCK_TTL = 3 * PERIOD
# What a loaded 2-core machine adds to a bound: scheduling, polling, connection set-up.
MARGIN = 3.0


def assert_completed_once(backends: Backends, users, jobs, attempt: int) -> None:
    for user, job in zip(users, jobs, strict=True):
        done = wait_terminal(user, job["id"], timeout=30)
        assert (done["status"], done["attempt"], done["result"]["steps"]) == ("completed", attempt, job["steps"]), done
        if attempt > 1:
            assert [run["ended"] for run in done["attempts"]] == ["interrupted"] * (attempt - 1)
    rows = wait_for(lambda: (found := backends.rows([job["id"] for job in jobs]))
                    and {row["status"] for row in found.values()} == {"completed"} and found, 10, 0.1,
                    "every job's row completed")
    assert len(rows) == len(jobs)


def start_all(users, steps: int, step_seconds: float) -> list[dict]:
    jobs = []
    for user in users:
        job, _ = start_demo(user, steps=steps, step_seconds=step_seconds)
        jobs.append({**job, "steps": steps})
    for user, job in zip(users, jobs, strict=True):
        wait_running(user, job["id"])
    return jobs


def test_jobs_of_an_instance_whose_workers_are_all_killed_are_resumed_by_the_other(backends, fleet):
    env = backends.env()
    lost, surviving = fleet.server(env, workers=2), fleet.server(env, workers=1)
    users_lost, users_surviving = users_on(fleet, lost.url, 2), users_on(fleet, surviving.url, 4)
    # The surviving instance's jobs heartbeat all along: they must not delay the reaping of the others.
    on_lost = start_all(users_lost, steps=16, step_seconds=0.3)
    on_surviving = start_all(users_surviving, steps=16, step_seconds=0.3)

    for pid in lost.worker_pids():
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    took = wait_resumed(backends, env, [job["id"] for job in on_lost], killed)

    bound = HEARTBEAT_TIMEOUT + LOCK_TTL + PERIOD + MARGIN
    assert max(took.values()) < bound, f"resumed {sorted(took.values())} s after the kill (bound {bound} s)"
    elsewhere = [fleet.again(surviving.url, user) for user in users_lost]  # the lost instance's workers restart
    assert_completed_once(backends, elsewhere, on_lost, attempt=2)
    assert_completed_once(backends, users_surviving, on_surviving, attempt=1)
    assert "resumed here (attempt 2 of 3" in lost.log() + surviving.log()


def test_sigterm_hands_jobs_that_outlast_the_grace_over_to_the_other_instance(backends, fleet):
    env = backends.env()
    stopping = fleet.server({**env, "EPM_GRACEFUL_TIMEOUT": "3"}, workers=2)
    surviving = fleet.server(env, workers=1)
    users_stopping, users_surviving = users_on(fleet, stopping.url, 2), users_on(fleet, surviving.url, 1)
    on_stopping = start_all(users_stopping, steps=20, step_seconds=0.3)
    on_surviving = start_all(users_surviving, steps=20, step_seconds=0.3)

    stopping.process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    took = wait_resumed(backends, env, [job["id"] for job in on_stopping], stopped)
    stopping.process.wait(15)

    # Handed over, not lapsed: resumed within the grace and one period, no heartbeat timeout.
    assert max(took.values()) < 3 + PERIOD + MARGIN, f"resumed {sorted(took.values())} s after SIGTERM"
    elsewhere = [fleet.again(surviving.url, user) for user in users_stopping]
    assert_completed_once(backends, elsewhere, on_stopping, attempt=2)
    assert_completed_once(backends, users_surviving, on_surviving, attempt=1)
    assert "handed over to be resumed" in stopping.log()


def test_after_redis_restarted_empty_a_second_start_of_a_running_job_is_refused(backends, fleet):
    env = backends.env()
    server = fleet.server(env, workers=2)
    [user] = users_on(fleet, server.url, 1)
    [job] = start_all([user], steps=40, step_seconds=0.2)
    backends.redis.restart()  # without persistence: the hash, the indexes and the lock are gone

    with backends.redis.client() as client:
        wait_for(lambda: client.zscore(f"{env['EPM_KEY_PREFIX']}user:{job['user_id']}:jobs", job["id"]), 10, 0.05,
                 "the runner to write its whole state back")
    again = user.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {"steps": 2}})
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "duplicate_job"
    assert user.post(f"/api/background-jobs/{job['id']}/cancel").status_code == 202
    assert wait_terminal(user, job["id"])["status"] == "cancelled"


def test_the_live_view_answers_from_redis_while_postgres_is_down_and_starts_are_refused(backends, fleet):
    env = backends.env()
    server = fleet.server(env, workers=2)
    [user, other] = users_on(fleet, server.url, 2)
    [job] = start_all([user], steps=30, step_seconds=0.2)
    backends.postgres.stop()
    try:
        listed = user.get("/api/background-jobs")
        assert listed.status_code == 200, listed.text[:300]
        assert [j["id"] for j in listed.json()["jobs"]] == [job["id"]]
        one = user.get(f"/api/background-jobs/{job['id']}")
        assert one.status_code == 200 and one.json()["job"]["status"] == "running"
        with user.http.stream("GET", f"/api/background-jobs/{job['id']}/events") as events:
            assert events.status_code == 200
            assert next(line for line in events.iter_lines() if line.startswith("data:"))
        refused = other.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {}})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "database_unavailable"
    finally:
        backends.postgres.start()
    assert job_state(user, job["id"])["id"] == job["id"]
    user.post(f"/api/background-jobs/{job['id']}/cancel")
