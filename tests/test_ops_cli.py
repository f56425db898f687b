"""``flask jobs ...`` as an operator runs it: a subprocess on the servers' Redis and PostgreSQL, on real jobs.

The module has its own database (so counts and purges see only its jobs) and its own key prefix on the
shared Redis; the server runs no upkeep of its own, so what the reaper and the outbox do here is the CLI's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import redis

from epm.jobs.store import JobStore
from tests.support import ROOT, Browserish, LiveServer, PostgresDatabase, real_backends, upgrade_database, wait_for

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def env(redis_url):
    database = PostgresDatabase(real_backends()[1])
    upgrade_database(database.url)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database.url, "SECRET_KEY": "ops-cli",
           "EPM_KEY_PREFIX": f"epmops:{uuid.uuid4().hex[:8]}:", "EPM_HEARTBEAT_TIMEOUT": "2",
           "EPM_MAINTENANCE": "0", "LOG_LEVEL": "WARNING"}
    yield env
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=env["EPM_KEY_PREFIX"] + "*", count=1000))
        if keys:
            client.delete(*keys)
    database.drop()


@pytest.fixture(scope="module")
def server(env):
    with LiveServer(env, workers=1).start() as live:
        yield live


@pytest.fixture
def user(server):
    with Browserish(server.url).signup() as browser:
        yield browser


@pytest.fixture
def store(env):
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    yield JobStore(client, prefix=env["EPM_KEY_PREFIX"])
    client.close()


def jobs(env, *args: str, status: int = 0) -> subprocess.CompletedProcess:
    """``flask --app wsgi jobs ARGS`` in a process of its own, as an operator types it."""
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "jobs", *args], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == status, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def jobs_together(env, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Several read-only commands at once (each process takes about a second to start)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: jobs(env, *args[1:], status=args[0]), commands))


def sql(env, query: str, *params) -> list[tuple]:
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def row(env, job_id: str) -> tuple | None:
    found = sql(env, "SELECT status, error_code, retry_of, params FROM background_jobs WHERE id = %s", job_id)
    return found[0] if found else None


def finished(user: Browserish, job_id: str) -> dict:
    def ended():
        job = user.get(f"/api/background-jobs/{job_id}").json()["job"]
        return job if job["terminal"] else None

    return wait_for(ended, 30, 0.05, f"job {job_id} to end")


def running(user: Browserish, job_id: str) -> None:
    wait_for(lambda: user.get(f"/api/background-jobs/{job_id}").json()["job"]["status"] == "running", 30, 0.05,
             f"job {job_id} to run")


def cancel(user: Browserish, job_id: str) -> None:
    user.post(f"/api/background-jobs/{job_id}/cancel")
    finished(user, job_id)


def recorded(env, job_id: str, status: str) -> tuple:
    return wait_for(lambda: (found := row(env, job_id)) and found[0] == status and found, 30, 0.05,
                    f"row of {job_id} to say {status}")


def test_list_and_show_lay_the_redis_hash_beside_the_database_row_and_a_completed_job_is_not_retried(env, user, store):
    job = finished(user, user.start_demo(steps=2, step_seconds=0.01)["id"])
    recorded(env, job["id"], "completed")

    uid = job["user_id"]
    listed, as_json, none, shown, document, refused = (result.stdout + result.stderr for result in jobs_together(
        env, (0, "list", "--user", uid), (0, "list", "--user", uid, "--type", "demo_countdown", "--json"),
        (0, "list", "--user", uid, "--status", "failed"), (0, "show", job["id"]), (0, "show", job["id"], "--json"),
        (1, "retry", job["id"])))
    assert refused.strip() == "Error: Only a failed or cancelled job can be retried; this one is completed."
    header, line = listed.splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "DB", "PROGRESS"]
    assert line.split()[:6] == [job["id"], "completed", "completed", "100%", "demo_countdown", uid]
    assert [(j["id"], j["status"], j["recorded_status"]) for j in json.loads(as_json)] == \
        [(job["id"], "completed", "completed")]
    assert none == "No jobs.\n"

    assert f"redis {store.job_key(job['id'])}" in shown
    status_line = next(line for line in shown.splitlines() if line.startswith("status "))
    assert status_line.split() == ["status", "completed", "completed"]
    assert "message " in shown and "differs" not in shown
    assert "hash TTL:" in shown and f"not in {store.active_key}" in shown
    document = json.loads(document)
    assert document["redis"]["hash"]["status"] == document["database"]["status"] == "completed"
    assert document["database"]["params"] == {"steps": 2, "step_seconds": 0.01}
    assert 0 < document["redis"]["ttl"] <= 86400 and document["redis"]["in_outbox"] is False


def test_an_unknown_job_or_a_bad_duration_is_a_one_line_error(env):
    *unknown, bad = jobs_together(env, (1, "show", "nosuchjob"), (1, "cancel", "nosuchjob"),
                                  (2, "purge", "--older-than", "30 days"))
    for failed in unknown:
        assert failed.stderr.strip().endswith("Error: There is no job 'nosuchjob' (neither in Redis nor in "
                                              "background_jobs).")
        assert "Traceback" not in failed.stderr and failed.stdout == ""
    assert "'30 days' is not a duration" in bad.stderr and "30d, 12h, 90m" in bad.stderr


def test_cancel_stops_a_running_job_and_retry_runs_it_again_linked_to_the_first(env, user):
    job = user.start_demo(steps=80, step_seconds=0.25)  # still running after a CLI's start on a busy machine
    running(user, job["id"])
    assert jobs(env, "cancel", job["id"]).stdout == f"{job['id']}: cancelled\n"
    recorded(env, job["id"], "cancelled")
    again, retried = jobs_together(env, (1, "cancel", job["id"]), (0, "retry", job["id"], "--json"))
    assert "Error: This job has already been cancelled." in again.stderr

    retried = json.loads(retried.stdout)
    assert retried["status"] == "completed" and retried["retry_of"] == job["id"]
    assert row(env, retried["id"]) == ("completed", None, job["id"], {"steps": 80, "step_seconds": 0.25})
    seen = user.get(f"/api/background-jobs/{retried['id']}").json()["job"]
    assert seen["status"] == "completed", "the user sees the retry run by the CLI"


def test_a_retry_whose_process_dies_is_reaped_by_flask_jobs_upkeep(env, user, store):
    job = user.start_demo(steps=300, step_seconds=0.1)  # its retry outlives the follower on a busy machine
    running(user, job["id"])
    cancel(user, job["id"])
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "retry", job["id"]]
    follower = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        first = follower.stdout.readline()
        new_id = first.split(":")[0]
        assert first.startswith(f"{new_id}: retry of {job['id']} (demo_countdown, user {job['user_id']})")
        running(user, new_id)
        progress = [follower.stdout.readline() for _ in range(2)]
        assert any(line.split()[0] == "running" for line in progress), f"it prints the progress as it goes: {progress}"
    finally:
        os.killpg(follower.pid, signal.SIGKILL)
        follower.wait(10)
    wait_for(lambda: (store.active_ids().get(new_id) or time.time()) < time.time(), 15, 0.1, "the heartbeat to lapse")

    reaped = jobs(env, "upkeep").stdout.splitlines()
    assert reaped[0] == "reconciled 0, adopted 0, reaped 1, flushed 0"
    assert reaped[1].split()[:4] == ["interrupted", new_id, "demo_countdown", f"user={job['user_id']}"]
    assert row(env, new_id)[:2] == ("failed", "interrupted")
    assert finished(user, new_id)["error_code"] == "interrupted"


def test_flush_writes_a_finished_job_waiting_in_the_outbox(env, user, store):
    job = finished(user, user.start_demo(steps=1)["id"])
    recorded(env, job["id"], "completed")
    # As if the database had been down when the job ended: its row still says pending, its id waits.
    sql(env, "UPDATE background_jobs SET status = 'pending', completed_at = NULL WHERE id = %s", job["id"])
    store.outbox_add(job["id"])
    assert json.loads(jobs(env, "show", job["id"], "--json").stdout)["redis"]["in_outbox"] is True

    assert jobs(env, "flush").stdout == "written 1; still waiting 0\n"
    assert row(env, job["id"])[0] == "completed"
    assert json.loads(jobs(env, "flush", "--json").stdout) == {"written": 0, "waiting": 0}


def test_purge_deletes_old_finished_jobs_and_their_redis_keys_never_an_active_one(env, server, store):
    old_users = [Browserish(server.url).signup() for _ in range(2)]
    busy_user, recent_user = Browserish(server.url).signup(), Browserish(server.url).signup()
    busy = None
    try:
        old = [finished(u, u.start_demo(steps=1, fail_at=1 if i else None)["id"]) for i, u in enumerate(old_users)]
        recent = finished(recent_user, recent_user.start_demo(steps=1)["id"])
        busy = busy_user.start_demo(steps=600, step_seconds=0.1)  # outlives the commands; cancelled at the end
        running(busy_user, busy["id"])
        for job in [*old, recent]:
            recorded(env, job["id"], job["status"])
        old_ids = [job["id"] for job in old]
        sql(env, "UPDATE background_jobs SET completed_at = now() - interval '40 days', "
                 "created_at = now() - interval '40 days' WHERE id = ANY(%s)", old_ids)
        sql(env, "UPDATE background_jobs SET created_at = now() - interval '40 days' WHERE id = %s", busy["id"])

        dry = json.loads(jobs(env, "purge", "--older-than", "30d", "--dry-run", "--json").stdout)
        assert sorted(dry["job_ids"]) == sorted(old_ids) and dry["rows"] == 2
        assert dry["by_status"] == {"completed": 1, "failed": 1}
        assert all(row(env, job_id) for job_id in old_ids), "a dry run deletes nothing"

        said = jobs(env, "purge", "--older-than", "30d").stdout
        assert said.startswith("purged 2 finished job(s) that ended before ")
        assert said.rstrip().endswith("(1 completed, 1 failed): 2 row(s), 2 Redis hash(es)")
        for job in old:
            assert row(env, job["id"]) is None and store.load(job["id"]) is None
            assert job["id"] not in store.recent_ids(job["user_id"])
        assert row(env, recent["id"])[0] == "completed" and store.load(recent["id"]) is not None
        assert row(env, busy["id"])[0] == "pending" and store.load(busy["id"]).status.value == "running"
        assert json.loads(jobs(env, "purge", "--older-than", "720h", "--json").stdout)["rows"] == 0
    finally:
        if busy is not None:
            cancel(busy_user, busy["id"])
        for browser in [*old_users, busy_user, recent_user]:
            browser.close()


def test_stats_counts_rows_by_type_and_status_and_the_queues_in_redis(env, user, store):
    finished(user, user.start_demo(steps=1)["id"])
    busy = user.start_demo(steps=600, step_seconds=0.1)  # outlives the commands; cancelled at the end
    running(user, busy["id"])
    try:
        expected = {status: count for status, count in
                    sql(env, "SELECT status, count(*) FROM background_jobs GROUP BY status")}
        document, text, reaped = (json.loads(result.stdout) if "--json" in result.args else result.stdout
                                  for result in jobs_together(env, (0, "stats", "--json"), (0, "stats"),
                                                              (0, "upkeep", "--json")))
        assert reaped == {"reconciled": 0, "adopted": 0, "reaped": [], "flushed": 0}, "a live job is not reaped"
        assert document["database"]["by_status"] == expected
        assert document["database"]["by_type_and_status"]["demo_countdown"] == expected
        assert document["database"]["total"] == sum(expected.values())
        assert document["redis"] == {"prefix": env["EPM_KEY_PREFIX"], "active": 1, "overdue": 0, "outbox": 0,
                                     "dead_letters": 0}
        text = text.splitlines()
        assert text[0].startswith(f"background_jobs: {sum(expected.values())} row(s)")
        assert text[1].split()[0] == "TYPE" and text[2].split()[0] == "demo_countdown"
        assert text[-1] == (f"redis ({env['EPM_KEY_PREFIX']}): 1 active, 0 overdue (heartbeat lapsed), "
                            "0 in the outbox, 0 dead letter(s)")
    finally:
        cancel(user, busy["id"])
