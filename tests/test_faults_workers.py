"""Fault tests on real gunicorn+gevent servers: workers killed, stopped, recycled, and loaded with CPU.

Each server runs on our own Redis and PostgreSQL (tests/fault_support.py) with a 2 s heartbeat
timeout and upkeep every 0.5 s, so a dead job is found within seconds.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.fault_support import (
    flask_jobs,
    job_state,
    start_demo,
    wait_running,
    wait_terminal,
    worker_serving,
)
from tests.support import wait_for

pytestmark = pytest.mark.live

HEARTBEAT_TIMEOUT = 2.0


def test_a_killed_worker_s_job_is_interrupted_within_the_heartbeat_timeout_and_retry_runs_it_again(
        backends, fleet):
    env = backends.env(EPM_MAX_ATTEMPTS="1")  # no resume: the job ends interrupted
    server = fleet.server(env, workers=2)
    user = fleet.user(server.url)
    stream = fleet.stream(server.url, user)
    job, response = start_demo(user, steps=12, step_seconds=0.25)
    victim = worker_serving(server, response)
    wait_for(lambda: stream.saw(job["id"], status="running"), 10, message="the job running on the user's stream")

    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    live = wait_for(lambda: (h := backends.live_job(env, job["id"]))["status"] == "failed" and h, 10, 0.05,
                    "the job to be reaped in Redis")
    reaped_after = time.monotonic() - killed
    assert live["error_code"] == "interrupted" and "Retry" in live["error"]
    assert reaped_after < HEARTBEAT_TIMEOUT + 1.5, f"reaped {reaped_after:.1f}s after the kill"
    row = wait_for(lambda: (r := backends.rows([job["id"]]).get(job["id"])) and r["status"] == "failed" and r, 5)
    assert row["error_code"] == "interrupted" and row["completed_at"] is not None
    wait_for(lambda: stream.saw(job["id"], status="failed", error_code="interrupted"), 10,
             message="the user's stream to show the job interrupted")
    assert job["id"] not in backends.active_ids(env)

    retried = user.post(f"/api/background-jobs/{job['id']}/retry")
    assert retried.status_code == 202, retried.text
    again = retried.json()["job"]
    assert again["retry_of"] == job["id"] and again["id"] != job["id"]
    done = wait_terminal(user, again["id"])
    assert done["status"] == "completed" and done["result"]["steps"] == 12
    assert job_state(user, job["id"])["error_code"] == "interrupted", "the interrupted job stays as it was"
    wait_for(lambda: stream.saw(again["id"], status="completed"), 5, message="the retry on the user's stream")


def killed_while_running(fleet, env: dict[str, str]) -> tuple:
    """A one-worker server on ``env`` killed outright (SIGKILL to its group) while a user's job runs on it;
    returns the user and the job."""
    server = fleet.server(env, workers=1)
    user = fleet.user(server.url)
    job, _ = start_demo(user, steps=100, step_seconds=0.2)
    wait_running(user, job["id"])
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    return user, job


def test_jobs_of_a_server_killed_outright_are_interrupted_at_the_next_start_even_when_redis_lost_them(
        backends, fleet):
    env = backends.env(EPM_MAX_ATTEMPTS="1")  # no resume: the job ends interrupted
    user, job = killed_while_running(fleet, env)
    with backends.redis.client() as client:
        client.flushall()  # Redis lost everything too (our own server)
    assert backends.rows([job["id"]])[job["id"]]["status"] == "pending", "the row still says the job is active"

    restarted = fleet.server(env, workers=1)
    row = wait_for(lambda: (r := backends.rows([job["id"]])[job["id"]])["status"] == "failed" and r,
                   3 * HEARTBEAT_TIMEOUT + 5, 0.1, "startup reconciliation to interrupt the job")
    assert row["error_code"] == "interrupted"
    again = fleet.again(restarted.url, user)
    seen = job_state(again, job["id"])
    assert seen["status"] == "failed" and seen["error_code"] == "interrupted"


def test_flask_jobs_upkeep_interrupts_the_jobs_of_a_dead_server(backends, fleet):
    env = backends.env()
    user, job = killed_while_running(fleet, env)
    with backends.redis.client() as client:
        active = f"{env['EPM_KEY_PREFIX']}jobs:active"
        wait_for(lambda: (client.zscore(active, job["id"]) or 0) < time.time(), 5, 0.1, "the heartbeat to lapse")

    assert "reaped 1" in flask_jobs(env, "upkeep")
    assert backends.live_job(env, job["id"])["error_code"] == "interrupted"
    row = backends.rows([job["id"]])[job["id"]]
    assert (row["status"], row["error_code"]) == ("failed", "interrupted")


def test_sigterm_lets_short_jobs_finish_interrupts_the_rest_and_ends_streams_at_once(backends, fleet):
    env = backends.env(EPM_MAX_ATTEMPTS="1", EPM_GRACEFUL_TIMEOUT="8")
    server = fleet.server(env, workers=2)
    users = [fleet.user(server.url) for _ in range(3)]
    long_jobs = [start_demo(user, steps=100, step_seconds=0.3)[0] for user in users[1:]]
    streams = [fleet.stream(server.url, user, reconnect=False) for user in users]
    for user, job in zip(users[1:], long_jobs, strict=True):
        wait_running(user, job["id"])
    # The short job (3 s) starts last, so that it is still running when the signal comes, however slowly
    # the machine started the rest (a job started first could end before it was seen running).
    short, _ = start_demo(users[0], steps=6, step_seconds=0.5)
    wait_running(users[0], short["id"])
    wait_for(lambda: all(stream.jobs() for stream in streams), 10, message="every stream's snapshot")
    assert job_state(users[0], short["id"])["status"] == "running", "the short job is still running at the signal"
    # The users' connections stay open and idle, as a browser's do: the workers must not wait for them.
    stopped_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for stream in streams:
        assert stream.ended.wait(3), "event streams end as soon as the worker stops"
    streams_ended = time.monotonic() - stopped_at
    server.process.wait(15)
    exited = time.monotonic() - stopped_at

    ids = [short["id"], *(job["id"] for job in long_jobs)]
    rows = backends.rows(ids)
    assert (rows[short["id"]]["status"], backends.live_job(env, short["id"])["status"]) == ("completed", "completed")
    for job in long_jobs:
        assert (rows[job["id"]]["status"], rows[job["id"]]["error_code"]) == ("failed", "interrupted")
        live = backends.live_job(env, job["id"])
        assert (live["status"], live["error_code"]) == ("failed", "interrupted")
    assert backends.active_ids(env) == [], "nothing left running in Redis"
    assert streams_ended < 3.0, f"streams ended {streams_ended:.1f}s after SIGTERM"
    assert exited < 8.0, f"the server took {exited:.1f}s to stop (gunicorn kills workers at 8s)"
    log = server.log_path.read_text()
    assert log.count("Worker exiting") == 2 and "graceful timeout" not in log, log[-3000:]


def test_a_worker_recycled_at_max_requests_lets_its_running_job_finish(backends, fleet):
    env = backends.env(EPM_MAX_REQUESTS="30", EPM_GRACEFUL_TIMEOUT="8")
    server = fleet.server(env, workers=1)
    [first_worker] = server.worker_pids()
    user = fleet.user(server.url)
    job, _ = start_demo(user, steps=6, step_seconds=0.5)
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=20) as poke:
        for _ in range(40):  # past max_requests (30 + up to 10% jitter)
            assert poke.get("/healthz").status_code == 200
    wait_for(lambda: server.worker_pids() and server.worker_pids() != [first_worker], 15, 0.1, "a new worker")
    # The job takes 3 s; the user's idle keep-alive connection must not hold the old worker for 8.
    assert time.monotonic() - started < 6.5, "the old worker left as soon as its job was done"
    assert httpx.get(server.url + "/healthz", timeout=20).status_code == 200, "the new worker serves"
    row = wait_for(lambda: (r := backends.rows([job["id"]])[job["id"]])["status"] != "pending" and r, 10)
    assert row["status"] == "completed", f"the recycled worker's job ended {row['status']}/{row['error_code']}"
    assert backends.live_job(env, job["id"])["status"] == "completed"
    log = server.log_path.read_text()
    assert "max_requests reached" in log and "interrupted" not in log, log[-3000:]


def test_a_cpu_heavy_job_starves_neither_event_streams_nor_heartbeats(backends, fleet):
    # Heartbeats every second against a 4 s timeout: each 5 s computation outlasts the timeout, and a busy
    # machine's scheduling does not.
    env = backends.env(EPM_SSE_HEARTBEAT="0.25", EPM_HEARTBEAT_TIMEOUT="4")
    # The peer starts first and so holds the upkeep lock: its reaper would end any job on the other
    # server whose heartbeat lapsed while the CPU was busy.
    peer = fleet.server(env, workers=1)
    server = fleet.server(env, workers=1)
    heavy_user, light_user = fleet.user(server.url), fleet.user(server.url)
    stream = fleet.stream(server.url, light_user)
    # Both jobs go longer than the heartbeat timeout without reporting progress: one computing off the
    # event loop (5 s of CPU per step), one waiting out long stages.
    light, _ = start_demo(light_user, steps=3, step_seconds=5)
    heavy, _ = start_demo(heavy_user, steps=2, cpu_ms=5000)
    wait_running(heavy_user, heavy["id"])
    busy_from = time.monotonic()
    done_heavy = wait_terminal(heavy_user, heavy["id"], timeout=60)
    busy_until = time.monotonic()
    done_light = wait_terminal(light_user, light["id"], timeout=60)
    stream.stop()

    assert (done_heavy["status"], done_light["status"]) == ("completed", "completed"), (done_heavy, done_light)
    arrivals = [e["at"] for e in stream.events if busy_from <= e["at"] <= busy_until]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert busy_until - busy_from > 8, "the heavy job computed for its full 10 s"
    assert gaps and max(gaps) < 2.0, f"the stream went quiet for {max(gaps or [0]):.2f}s while the CPU was busy"
    assert "reaper: job" not in peer.log() + server.log()
