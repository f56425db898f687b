"""Automatic resume and per-job reaping in one process, on both backends.

A second ``JobService`` on the same app stands for another server process: it shares Redis and the
database, and has a runner of its own. The fault tests (test_faults_resume.py) prove the same on
real gunicorn servers.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime

import pytest
from sqlalchemy.exc import OperationalError

from epm.extensions import db
from epm.jobs import current_jobs
from epm.jobs.job import RESUMED_MESSAGE, Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.models import BackgroundJob
from epm.jobs.service import JobService
from epm.jobs.upkeep import Upkeep
from tests.fault_support import cut_off_runner
from tests.support import wait_for


@pytest.fixture(autouse=True)
def _fast_heartbeat(monkeypatch):
    monkeypatch.setenv("EPM_HEARTBEAT_TIMEOUT", "1")


@pytest.fixture
def peer(app):
    """Another process's job service: same Redis and database, its own runner."""
    other = JobService(app, app.extensions["epm.jobs"].store)
    yield other
    other.runner.shutdown(grace=5)
    app.extensions["epm.jobs"].runner.shutdown(grace=5)


def start(app, user_id: str = "1", **params) -> Job:
    with app.app_context():
        return current_jobs().start("demo_countdown", user_id=user_id, params=params)


def live(app, job_id: str) -> Job | None:
    return app.extensions["epm.jobs"].store.load(job_id)


def rows(app, job_id: str) -> list[BackgroundJob]:
    with app.app_context():
        found = db.session.query(BackgroundJob).filter_by(id=job_id).all()
        db.session.expunge_all()
        return found


def recorded(app, job_id: str) -> list[str]:
    """The statuses of the job's rows once its terminal state is in the database (one row, one status)."""
    return wait_for(lambda: (found := [row.status for row in rows(app, job_id)])[0] not in ("pending", "running")
                    and found, 5, 0.05, "the terminal state in the database")


def reap(app, service: JobService, **kwargs) -> list[Job]:
    with app.app_context():
        try:
            return service.upkeep.reap(**kwargs)
        finally:
            db.session.remove()


def lapse(store, job_id: str) -> None:
    """The job's heartbeat deadline passed (its process went silent)."""
    store.redis.zadd(store.active_key, {job_id: time.time() - 1})


def orphan(app, job_id: str, **fields) -> Job:
    """A running job whose process is gone: its hash, row and lock in place, its deadline passed."""
    store = app.extensions["epm.jobs"].store
    now = iso(utcnow())
    fields.setdefault("user_id", "1")
    job = Job(id=job_id, job_type="demo_countdown", title="Demo countdown", status=JobStatus.RUNNING,
              message="Step 1 of 3", created_at=now, started_at=now, updated_at=now, seq=next_seq(0), **fields)
    with app.app_context():
        db.session.add(BackgroundJob.from_job(job, {"steps": 3}))
        db.session.commit()
    store.acquire_lock(job)
    store.save_new(job, {"steps": 3})
    lapse(store, job_id)
    return job


def test_a_job_handed_over_at_shutdown_goes_on_elsewhere_from_its_checkpoint(app, peer):
    service = app.extensions["epm.jobs"]
    store = service.store
    job = start(app, steps=40, step_seconds=0.1)
    wait_for(lambda: int(store.checkpoints(job.id).get("step", 1)) > 1, 10, 0.05, "a checkpoint past step 1")
    assert service.runner.shutdown(grace=0) == [job.id]
    handed = live(app, job.id)
    assert handed.status is JobStatus.RUNNING, "not failed: handed over"
    assert store.redis.zscore(store.active_key, job.id) <= time.time(), "its deadline passed at once"
    checkpoint = store.checkpoints(job.id)["step"]
    pubsub = store.redis.pubsub()
    pubsub.subscribe(store.job_channel(job.id))
    wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, message="subscription confirmed")

    [resumed] = reap(app, peer)
    assert (resumed.id, resumed.attempt, resumed.message) == (job.id, 2, RESUMED_MESSAGE)
    done = wait_for(lambda: (j := live(app, job.id)).is_terminal and j, 15, 0.05, "the resumed job to end")
    events = [m for _ in range(400) if (m := pubsub.get_message(timeout=0.01)) and m["type"] == "message"]
    pubsub.close()
    assert (done.status, done.attempt, done.result["steps"]) == (JobStatus.COMPLETED, 2, 40)
    [history] = done.attempts
    assert (history["attempt"], history["ended"]) == (1, "interrupted")
    assert history["started_at"] == handed.started_at and done.started_at == handed.started_at
    resumed_step = re.compile(r'"message":"Step (\d+) of 40 \(resumed after a server restart\)"')
    steps = [int(found.group(1)) for e in events if (found := resumed_step.search(e["data"]))]
    assert steps and min(steps) >= checkpoint > 1, f"attempt 2 went on from step {checkpoint}, not 1: {steps}"
    assert recorded(app, job.id) == ["completed"]


def test_a_dead_job_is_taken_over_in_one_round_while_other_jobs_heartbeat(app):
    service = app.extensions["epm.jobs"]
    store = service.store
    service.runner.max_attempts = 1
    job = orphan(app, "dead1")
    stop = threading.Event()

    def heartbeats() -> None:  # 50 live jobs beating as fast as they can
        while not stop.is_set():
            store.redis.zadd(store.active_key, {f"busy{n}": time.time() + 60 for n in range(50)})

    beating = [threading.Thread(target=heartbeats) for _ in range(3)]
    for thread in beating:
        thread.start()
    try:
        reaped = reap(app, service)
    finally:
        stop.set()
        for thread in beating:
            thread.join()
    assert [j.id for j in reaped] == [job.id]
    assert (live(app, job.id).status, live(app, job.id).error_code) == (JobStatus.FAILED, "interrupted")
    store.redis.zrem(store.active_key, *(f"busy{n}" for n in range(50)))


def own_upkeep(app) -> Upkeep:
    """An upkeep loop of the test's own beside the app's (which the tests do not start)."""
    service = app.extensions["epm.jobs"]
    return Upkeep(app, service.store, service.records, service.runner)


def taken_over_late(app, job_id: str, deadline: float, maintenance: Upkeep) -> float:
    """Run ``maintenance``'s loop (interval 30 s, a whole round at once) until the job is resumed: how long after
    ``deadline`` the take-over came."""
    app.extensions["epm.jobs"].store.redis.zadd(app.extensions["epm.jobs"].store.active_key, {job_id: deadline})
    maintenance.interval = 30.0
    maintenance.start()
    maintenance.kick()  # a whole round at once (a worker booting), which finds nothing overdue yet
    try:
        resumed = wait_for(lambda: (j := live(app, job_id)).attempt == 2 and j, 10, 0.01, "the job to be resumed")
    finally:
        maintenance.stop()
    done = wait_for(lambda: (j := live(app, job_id)).is_terminal and j, 10, 0.05, "the resumed job to end")
    assert (done.status, done.attempt) == (JobStatus.COMPLETED, 2)
    return datetime.fromisoformat(resumed.attempts[-1]["ended_at"].replace("Z", "+00:00")).timestamp() - deadline


def test_the_upkeep_holder_takes_a_dead_job_over_at_its_deadline_not_at_its_next_round(app):
    """A worker killed just after a heartbeat: its job is resumed about the heartbeat timeout later, however long
    the upkeep interval (here 30 s): the lock holder wakes when the earliest deadline ahead passes."""
    job = orphan(app, "dead5")
    deadline = time.time() + 1.0  # its last heartbeat was just now
    late = taken_over_late(app, job.id, deadline, own_upkeep(app))
    assert 0 <= late < 2.0, f"taken over {late:.2f}s after its deadline (the next whole round was 30 s away)"


def test_a_deadline_passing_while_the_reaper_works_is_taken_at_once_not_at_the_next_round(app, monkeypatch):
    """The reaper of a round looks at the overdue jobs once; a deadline passing while the round goes on (a busy
    process, other jobs to take over) is woken for as soon as the round ends."""
    upkeep = own_upkeep(app)
    job = orphan(app, "dead6")
    deadline = time.time() + 0.3
    reap = upkeep.reap

    def slow_reap(**kwargs):
        found = reap(**kwargs)
        time.sleep(0.6)  # the round is busy while the deadline passes
        return found

    monkeypatch.setattr(upkeep, "reap", slow_reap)
    late = taken_over_late(app, job.id, deadline, upkeep)
    assert 0 <= late < 2.5, f"taken over {late:.2f}s after its deadline (the next whole round was 30 s away)"


def test_exactly_one_of_two_processes_resumes_a_dead_job(app, peer):
    service = app.extensions["epm.jobs"]
    job = orphan(app, "dead2")
    results: list[list[Job]] = []
    racers = [threading.Thread(target=lambda s=s: results.append(reap(app, s))) for s in (service, peer)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()
    assert sorted(len(r) for r in results) == [0, 1], results
    done = wait_for(lambda: (j := live(app, job.id)).is_terminal and j, 10, 0.05, "the resumed job to end")
    assert (done.status, done.attempt) == (JobStatus.COMPLETED, 2)
    assert recorded(app, job.id) == ["completed"]


def test_a_job_out_of_attempts_ends_interrupted(app):
    service = app.extensions["epm.jobs"]
    job = orphan(app, "dead3", attempt=3)
    assert [j.id for j in reap(app, service)] == [job.id]
    ended = live(app, job.id)
    assert (ended.status, ended.error_code, ended.attempt) == (JobStatus.FAILED, "interrupted", 3)
    assert recorded(app, job.id) == ["failed"] and rows(app, job.id)[0].error_code == "interrupted"


def test_a_dead_job_the_user_asked_to_cancel_ends_cancelled_instead_of_resuming(app):
    service = app.extensions["epm.jobs"]
    job = orphan(app, "dead4")
    service.store.request_cancel(job.id)
    reap(app, service)
    assert live(app, job.id).status is JobStatus.CANCELLED
    assert recorded(app, job.id) == ["cancelled"]


def test_a_runner_whose_job_was_resumed_elsewhere_stops_and_writes_nothing(app, peer, monkeypatch):
    service = app.extensions["epm.jobs"]
    store = service.store
    job = start(app, steps=30, step_seconds=0.1)
    wait_for(lambda: live(app, job.id).status is JobStatus.RUNNING, message="the job to run")
    cut_off_runner(monkeypatch, store, job.id)
    [resumed] = reap(app, peer)
    assert resumed.attempt == 2
    monkeypatch.undo()  # Redis is back for the first runner: it finds a newer attempt and gives up
    wait_for(lambda: job.id not in service.runner.running, 5, 0.05, "the first runner to give the job up")
    assert job.id in peer.runner.running or live(app, job.id).is_terminal
    done = wait_for(lambda: (j := live(app, job.id)).is_terminal and j, 15, 0.05, "the resumed job to end")
    assert (done.status, done.attempt) == (JobStatus.COMPLETED, 2)
    assert recorded(app, job.id) == ["completed"]


def test_a_running_job_writes_its_lock_back_after_redis_lost_everything(app, auth_client):
    store = app.extensions["epm.jobs"].store
    first = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown",
                                                           "params": {"steps": 60, "step_seconds": 0.1}})
    assert first.status_code == 202
    job_id = first.json["job"]["id"]
    wait_for(lambda: live(app, job_id).status is JobStatus.RUNNING, message="the job to run")
    store.redis.delete(*store.redis.scan_iter(match=app.config["EPM_KEY_PREFIX"] + "*"))

    user_id = first.json["job"]["user_id"]
    wait_for(lambda: job_id in store.recent_ids(user_id), 5, 0.05, "the runner to write its whole state back")
    again = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown",
                                                           "params": {"steps": 60, "step_seconds": 0.1}})
    assert again.status_code == 409, again.json
    assert again.json["error"]["code"] == "duplicate_job" and job_id in again.get_data(as_text=True)
    auth_client.post(f"/api/background-jobs/{job_id}/cancel")


def test_the_list_and_a_job_come_from_redis_while_the_database_is_down(app, auth_client, monkeypatch):
    first = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown",
                                                           "params": {"steps": 40, "step_seconds": 0.1}})
    job_id = first.json["job"]["id"]
    wait_for(lambda: live(app, job_id).status is JobStatus.RUNNING, message="the job to run")

    def down(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "scalars", down)
    monkeypatch.setattr(db.session, "get", down)
    listed = auth_client.get("/api/background-jobs")
    assert listed.status_code == 200 and [j["id"] for j in listed.json["jobs"]] == [job_id]
    assert auth_client.get("/api/background-jobs?status=completed").json["jobs"] == []
    one = auth_client.get(f"/api/background-jobs/{job_id}")
    assert one.status_code == 200 and one.json["job"]["status"] == "running"
    monkeypatch.undo()
    auth_client.post(f"/api/background-jobs/{job_id}/cancel")


def test_a_resumed_job_s_page_and_api_show_its_attempts(app, auth_client, user):
    service = app.extensions["epm.jobs"]
    job = orphan(app, "dead5", user_id=str(user.id))
    reap(app, service)
    wait_for(lambda: live(app, job.id).is_terminal, 10, 0.05, "the resumed job to end")
    page = auth_client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "Resumed after a server restart: attempt 2; attempt 1 stopped" in page
    shown = auth_client.get(f"/api/background-jobs/{job.id}").json["job"]
    assert (shown["attempt"], [run["attempt"] for run in shown["attempts"]]) == (2, [1])


def test_a_resumed_jobs_attempts_are_kept_in_its_record(app, user):
    """Once the hash is gone (retention, a Redis restart), the row still says which attempt ended it."""
    from epm.extensions import db
    from epm.jobs.job import Job, JobStatus
    from epm.jobs.models import BackgroundJob

    history = [{"attempt": 1, "started_at": "2026-12-01T00:00:00.000Z", "ended_at": "2026-12-01T00:00:05.000Z",
                "ended": "interrupted"}]
    job = Job(id="resumedjob", job_type="demo_countdown", user_id=str(user.id), status=JobStatus.COMPLETED,
              created_at="2026-12-01T00:00:00.000Z", completed_at="2026-12-01T00:00:09.000Z", attempt=2,
              attempts=history)
    with app.app_context():
        db.session.add(BackgroundJob.from_job(job, {}))
        db.session.commit()
        db.session.expire_all()
        recorded = db.session.get(BackgroundJob, "resumedjob").to_job()
    assert recorded.attempt == 2 and recorded.attempts == history


def test_the_owner_sees_a_running_job_all_the_while_redis_has_lost_it_and_its_checkpoints_come_back(
        app, auth_client):
    store = app.extensions["epm.jobs"].store
    first = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown",
                                                           "params": {"steps": 60, "step_seconds": 0.1}})
    job_id = first.json["job"]["id"]
    wait_for(lambda: int(store.checkpoints(job_id).get("step", 1)) > 1, 10, 0.05, "a checkpoint past step 1")
    store.redis.delete(*store.redis.scan_iter(match=app.config["EPM_KEY_PREFIX"] + "*"))

    # Until the runner has written it all back (its checkpoints after it), the job comes from its row (as
    # started: pending); a checkpoint written into the lost hash meanwhile never stands for the job.
    seen = []
    while not (live(app, job_id) and store.checkpoints(job_id)) and len(seen) < 500:
        answer = auth_client.get(f"/api/background-jobs/{job_id}")
        seen.append(answer.status_code)
        assert answer.status_code == 200 and answer.json["job"]["status"] in ("pending", "running"), answer.json
        time.sleep(0.01)
    assert int(store.checkpoints(job_id)["step"]) > 1, "the checkpoint written back"
    assert live(app, job_id).user_id == first.json["job"]["user_id"]
    auth_client.post(f"/api/background-jobs/{job_id}/cancel")
