"""The safety net in one process, on both backends: reaping races, shutdown, exactly-once records, reconciliation.

The fault tests (test_faults_*.py) prove the same promises against real servers; these pin down the
rules each part keeps, quickly.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from epm.extensions import db
from epm.jobs import current_jobs
from epm.jobs.job import Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.models import BackgroundJob
from epm.jobs.registry import get_operation
from epm.jobs.sse import stream
from epm.jobs.store import Guard
from epm.jobs.upkeep import Upkeep, end_orphan
from tests.fault_support import cut_off_runner
from tests.support import wait_for


@pytest.fixture(autouse=True)
def _fast_heartbeat(monkeypatch):
    """A 1 s heartbeat timeout for the apps of this module (read from the environment at create_app)."""
    monkeypatch.setenv("EPM_HEARTBEAT_TIMEOUT", "1")


@pytest.fixture(autouse=True)
def _no_leftover_jobs(app):
    yield
    app.extensions["epm.jobs"].runner.shutdown(grace=5)


def no_resume(app) -> None:
    """Turn automatic resume off (``EPM_MAX_ATTEMPTS=1``): a job its process cannot finish ends interrupted."""
    app.extensions["epm.jobs"].runner.max_attempts = 1


def start(app, user_id: str = "1", **params) -> Job:
    with app.app_context():
        return current_jobs().start("demo_countdown", user_id=user_id, params=params)


def row_of(app, job_id: str) -> BackgroundJob:
    with app.app_context():
        row = db.session.get(BackgroundJob, job_id)
        db.session.expunge(row)
        return row


def live(app, job_id: str) -> Job | None:
    return app.extensions["epm.jobs"].store.load(job_id)


def test_a_runner_cut_off_from_redis_whose_job_was_reaped_stops_and_overwrites_nothing(app, monkeypatch):
    service = app.extensions["epm.jobs"]
    store = service.store
    job = start(app, steps=40, step_seconds=0.1)
    wait_for(lambda: live(app, job.id).status is JobStatus.RUNNING, message="the job to run")
    cut_off_runner(monkeypatch, store, job.id)
    reaped = end_orphan(store, job.id, JobStatus.FAILED, error_code="interrupted", error="gone")
    assert reaped is not None
    with app.app_context():
        service.records.record_terminal(reaped)
    pubsub = store.redis.pubsub()
    pubsub.subscribe(store.job_channel(job.id))
    wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, message="subscription confirmed")
    monkeypatch.undo()  # Redis is back for the runner

    wait_for(lambda: job.id not in service.runner.running, 5, 0.05, "the runner to give the job up")
    after = [m for _ in range(5) if (m := pubsub.get_message(timeout=0.1)) and m["type"] == "message"]
    pubsub.close()
    assert after == [], "no event after the reaper's: the job is not brought back to life"
    now = live(app, job.id)
    assert (now.status, now.error_code, now.seq) == (JobStatus.FAILED, "interrupted", reaped.seq)
    row = row_of(app, job.id)
    assert (row.status, row.error_code) == ("failed", "interrupted")


def test_the_first_terminal_state_recorded_is_final_and_wins_back_redis(app):
    service = app.extensions["epm.jobs"]
    job = start(app, steps=1)
    wait_for(lambda: row_of(app, job.id).status == "completed", message="the job recorded")
    late = live(app, job.id)
    late.status, late.error_code, late.error = JobStatus.FAILED, "interrupted", "late"
    late.seq = next_seq(late.seq)
    service.store.write(late, Guard.RECORD)  # e.g. a runner that was cut off wrote its own ending meanwhile

    with app.app_context():
        assert service.records.record_terminal(late) is True
    row = row_of(app, job.id)
    assert (row.status, row.error_code) == ("completed", None)
    now = live(app, job.id)
    assert (now.status, now.error_code) == (JobStatus.COMPLETED, None) and now.seq > late.seq
    with app.app_context():
        assert service.records.record_terminal(now) is True  # the same state again: nothing changes
    assert row_of(app, job.id).completed_at == row.completed_at


def test_a_stopping_process_refuses_new_jobs_with_503(app, auth_client):
    app.extensions["epm.jobs"].runner.shutdown(0)
    response = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {}})
    assert response.status_code == 503
    assert response.json["error"]["code"] == "shutting_down"


def test_a_job_submitted_as_the_process_stops_ends_interrupted_instead_of_running(app):
    service = app.extensions["epm.jobs"]
    no_resume(app)
    service.runner._accepting = False  # shutdown began after start() checked, before the runner got the job
    with app.app_context():
        job = Job(id="late1", job_type="demo_countdown", user_id="1", status=JobStatus.PENDING,
                  created_at=iso(utcnow()), seq=next_seq(0))
        db.session.add(BackgroundJob.from_job(job, {}))
        db.session.commit()
        service.store.write(job, Guard.RECORD)
        service.runner.submit(job, get_operation("demo_countdown"), {})
    assert (live(app, "late1").status, live(app, "late1").error_code) == (JobStatus.FAILED, "interrupted")
    assert row_of(app, "late1").status == "failed"


def test_shutdown_lets_jobs_that_fit_the_grace_finish_and_interrupts_the_rest(app):
    service = app.extensions["epm.jobs"]
    no_resume(app)
    short = start(app, user_id="1", steps=2, step_seconds=0.2)
    long = start(app, user_id="2", steps=50, step_seconds=0.2)
    wait_for(lambda: live(app, long.id).status is JobStatus.RUNNING)
    began = time.monotonic()
    assert service.runner.shutdown(grace=1.5) == [long.id]
    assert time.monotonic() - began < 2.5
    assert live(app, short.id).status is JobStatus.COMPLETED
    assert (live(app, long.id).status, live(app, long.id).error_code) == (JobStatus.FAILED, "interrupted")
    assert (row_of(app, long.id).status, row_of(app, long.id).error_code) == ("failed", "interrupted")
    assert service.store.active_ids() == {}


def test_an_operation_deaf_to_stop_is_recorded_interrupted_and_its_late_end_changes_nothing(app):
    service = app.extensions["epm.jobs"]
    no_resume(app)
    job = start(app, steps=1, cpu_ms=1500)  # one step of computation that cannot be interrupted
    wait_for(lambda: live(app, job.id).status is JobStatus.RUNNING)
    service.runner.shutdown(grace=0.4)
    ended = live(app, job.id)
    assert (ended.status, ended.error_code) == (JobStatus.FAILED, "interrupted")
    wait_for(lambda: job.id not in service.runner.running, 5, 0.05, "the computation to return")
    assert live(app, job.id).seq == ended.seq, "its own completion was not written"
    assert row_of(app, job.id).status == "failed"


def test_a_row_left_active_with_no_state_in_redis_is_adopted_then_interrupted(app):
    service = app.extensions["epm.jobs"]
    no_resume(app)
    maintenance = Upkeep(app, service.store, service.records, service.runner)
    created = iso(utcnow().replace(year=2020))
    orphan = Job(id="orphan1", job_type="demo_countdown", user_id="1", title="Demo countdown",
                 status=JobStatus.PENDING, created_at=created)
    with app.app_context():
        db.session.add(BackgroundJob.from_job(orphan, {"steps": 3}))  # the process died before writing Redis
        db.session.commit()
    assert maintenance.run_once()["adopted"] == 1
    assert maintenance.run_once()["reaped"] == 0, "a live runner gets a full heartbeat timeout to show itself"
    wait_for(lambda: maintenance.run_once()["reaped"] == 1, 5, 0.2, "the adopted row to be reaped")
    assert (row_of(app, "orphan1").status, row_of(app, "orphan1").error_code) == ("failed", "interrupted")
    shown = live(app, "orphan1")
    assert (shown.status, shown.error_code) == (JobStatus.FAILED, "interrupted")
    assert "orphan1" in service.store.recent_ids("1")


def test_finished_jobs_come_back_into_redis_after_it_lost_its_data(app):
    service = app.extensions["epm.jobs"]
    maintenance = Upkeep(app, service.store, service.records, service.runner)
    job = start(app, steps=1)
    wait_for(lambda: row_of(app, job.id).status == "completed")
    maintenance.run_once()  # the marker of a Redis that has its data
    keys = list(service.store.redis.scan_iter(match=app.config["EPM_KEY_PREFIX"] + "*"))
    service.store.redis.delete(*keys)  # Redis lost everything of ours (a restart without persistence)

    assert maintenance.run_once()["reconciled"] == 1
    back = live(app, job.id)
    assert back.status is JobStatus.COMPLETED and back.result["steps"] == 1
    assert service.store.recent_ids("1") == [job.id]
    assert 0 < service.store.redis.ttl(service.store.job_key(job.id)) <= app.config["EPM_RETENTION_SECONDS"]
    assert maintenance.run_once()["reconciled"] == 0, "once per loss"


def test_a_start_that_cannot_reach_redis_leaves_no_row_and_no_lock(app, auth_client, monkeypatch):
    store = app.extensions["epm.jobs"].store

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(store, "save_new", unreachable)
    response = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {}})
    assert response.status_code == 503 and response.json["error"]["code"] == "redis_unavailable"
    with app.app_context():
        assert db.session.query(BackgroundJob).count() == 0
    monkeypatch.undo()
    response = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {}})
    assert response.status_code == 202, "the lock was let go"


def test_event_streams_end_when_the_process_stops(app):
    hub = app.extensions["epm.hub"]
    hub.heartbeat = 0.1  # the hub's one keep-alive timer starts with the first stream
    body = stream(hub, ["epmtest:nothing"], snapshot=list)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(body))
    reader.start()
    wait_for(lambda: b": keep-alive\n\n" in received, message="the stream to be open")
    hub.close()
    reader.join(2)
    assert not reader.is_alive(), "the stream ended"
    body.close()
    assert hub.streams == 0
    late = stream(hub, ["epmtest:nothing"], snapshot=list)
    assert list(late) == [b"retry: 2000\n\n"], "a stream opened while stopping ends at once"


def test_an_event_stream_cannot_open_without_redis_and_answers_503(app, auth_client, backend):
    if backend != "embedded":
        pytest.skip("takes the in-process Redis down; the real one is taken down in test_faults_backends.py")
    app.extensions["redis"].connection_pool.connection_kwargs["server"].connected = False
    response = auth_client.get("/api/background-jobs/events")
    assert response.status_code == 503 and response.json["error"]["code"] == "redis_unavailable"
    assert app.extensions["epm.hub"].streams == 0
