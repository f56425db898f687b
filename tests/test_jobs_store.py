"""JobStore and Runner against fakeredis and real Redis: the key contract, one round trip, coalescing."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epm.jobs import JobContext, current_jobs
from epm.jobs.job import Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.registry import operation
from epm.jobs.store import REFUSED, WRITTEN, Guard
from epm.jobs.upkeep import end_orphan
from tests.support import wait_for


def _job(**kw) -> Job:
    base = dict(id="j1", job_type="demo_countdown", user_id="7", title="Demo", status=JobStatus.RUNNING,
                progress=40, message="Halfway", session_id="3", seq=next_seq(0), created_at=iso(utcnow()))
    base.update(kw)
    return Job(**base)


def test_save_writes_the_hash_an_operator_reads_with_hgetall(app, plain_redis):
    store = current_jobs_store(app)
    store.write(_job(), Guard.RECORD)
    prefix = app.config["EPM_KEY_PREFIX"]
    data = plain_redis.hgetall(f"{prefix}job:j1")
    assert data["status"] == "running"
    assert data["progress"] == "40"
    assert data["message"] == "Halfway"
    assert data["user_id"] == "7" and data["session_id"] == "3"
    assert "error" not in data
    assert plain_redis.zscore(f"{prefix}jobs:active", "j1") is not None
    assert plain_redis.zscore(f"{prefix}user:7:jobs", "j1") is not None
    assert plain_redis.get(f"{prefix}user:7:version") == "1"
    assert plain_redis.ttl(f"{prefix}job:j1") == -1  # no TTL while active


def _commands_sent(store, action) -> list[str]:
    """The Redis commands ``action()`` sends (it must not fail), through the client or the store's lane."""
    commands = []
    real_execute, real_call, real_send = store.redis.execute_command, store._call, store._send

    def counting(real):
        def call(*args, **kwargs):
            commands.append(args[0])
            return real(*args, **kwargs)
        return call

    def counting_packed(packed):
        commands.append(packed.split(b"\r\n")[2].decode())  # *<n>, $<length>, the command's name
        return real_send(packed)

    store.redis.execute_command, store._call = counting(real_execute), counting(real_call)
    if real_send is not None:
        store._send = counting_packed
    try:
        assert action()
    finally:
        store.redis.execute_command, store._call, store._send = real_execute, real_call, real_send
    return commands


def test_a_whole_write_is_one_evalsha(app):
    store = current_jobs_store(app)
    store.write(_job(), Guard.RECORD)  # the first call loads the script (SCRIPT LOAD): once per server
    job = _job(progress=50, seq=next_seq(0))
    assert _commands_sent(store, lambda: store.write(job, Guard.RUNNER) == WRITTEN) == ["EVALSHA"]


def test_runner_guard_keeps_an_end(app):
    store = current_jobs_store(app)
    store.write(_job(status=JobStatus.FAILED, error_code="interrupted"), Guard.RECORD)
    assert store.write(_job(progress=90), Guard.RUNNER) == REFUSED
    assert store.load("j1").status is JobStatus.FAILED


def test_runner_guard_keeps_a_newer_attempt(app):
    store = current_jobs_store(app)
    store.write(_job(attempt=2), Guard.RECORD)
    assert store.write(_job(attempt=1, progress=90), Guard.RUNNER) == REFUSED
    assert store.write(_job(attempt=2, progress=90), Guard.RUNNER) == WRITTEN
    assert store.load("j1").progress == 90


def test_missing_guard_writes_only_a_new_hash(app):
    store = current_jobs_store(app)
    assert store.write(_job(), Guard.MISSING) == WRITTEN
    assert store.write(_job(progress=90), Guard.MISSING) == REFUSED
    assert store.load("j1").progress == 40


def test_record_guard_overwrites_an_end(app):
    store = current_jobs_store(app)
    store.write(_job(status=JobStatus.FAILED), Guard.RECORD)
    assert store.write(_job(status=JobStatus.COMPLETED, progress=100), Guard.RECORD) == WRITTEN
    assert store.load("j1").status is JobStatus.COMPLETED


def test_a_terminal_write_leaves_the_active_set_and_the_share(app, plain_redis):
    store = current_jobs_store(app)
    prefix = app.config["EPM_KEY_PREFIX"]
    store.write(_job(), Guard.RECORD)
    plain_redis.hset(f"{prefix}job:j1", "cancel_requested", "1")
    assert plain_redis.zscore(f"{prefix}user:7:running", "j1") is not None
    store.write(_job(status=JobStatus.CANCELLED), Guard.RUNNER)
    assert plain_redis.zscore(f"{prefix}jobs:active", "j1") is None
    assert plain_redis.zscore(f"{prefix}user:7:running", "j1") is None
    assert plain_redis.hget(f"{prefix}job:j1", "cancel_requested") is None


def _follow_job_and_user(app, plain_redis):
    """A pub/sub connection following job j1's channel and user 7's, once Redis confirmed both."""
    prefix = app.config["EPM_KEY_PREFIX"]
    pubsub = plain_redis.pubsub()
    pubsub.subscribe(f"{prefix}job:j1", f"{prefix}user:7")
    wait_for(lambda: pubsub.get_message(timeout=0.2) and False or len(pubsub.channels) == 2)
    return pubsub


def _two_events(pubsub) -> list[dict]:
    received: list[dict] = []
    wait_for(lambda: (m := pubsub.get_message(timeout=0.2)) and m["type"] == "message" and received.append(m)
             or len(received) == 2, message="two published events")
    return received


def test_save_publishes_the_job_on_its_channel_and_the_users(app, plain_redis):
    store = current_jobs_store(app)
    prefix = app.config["EPM_KEY_PREFIX"]
    pubsub = _follow_job_and_user(app, plain_redis)
    job = _job()
    store.write(job, Guard.RECORD)
    received = _two_events(pubsub)
    assert {m["channel"] for m in received} == {f"{prefix}job:j1", f"{prefix}user:7"}
    event = json.loads(received[0]["data"])
    assert event["seq"] == job.seq and event["progress"] == 40 and event["status"] == "running"
    pubsub.close()


def test_progress_write_is_one_evalsha_that_writes_changed_fields_and_publishes(app, plain_redis):
    store = current_jobs_store(app)
    prefix = app.config["EPM_KEY_PREFIX"]
    job = _job()
    store.write(job, Guard.RECORD)
    store.save_progress(job)  # the first call loads the script (SCRIPT LOAD): once per server
    plain_redis.hset(f"{prefix}job:j1", "cancel_requested", "1")  # set by someone else: kept
    pubsub = _follow_job_and_user(app, plain_redis)
    job.progress, job.message, job.seq, job.updated_at = 55, "More", next_seq(job.seq), iso(utcnow())
    assert _commands_sent(store, lambda: store.save_progress(job) is True) == ["EVALSHA"]
    data = plain_redis.hgetall(f"{prefix}job:j1")
    assert (data["progress"], data["message"], data["seq"]) == ("55", "More", str(job.seq))
    assert data["cancel_requested"] == "1" and data["status"] == "running"
    assert plain_redis.get(f"{prefix}user:7:version") == "3"
    assert plain_redis.zscore(f"{prefix}jobs:active", "j1") > job.seq / 1000
    received = _two_events(pubsub)
    assert {json.loads(m["data"])["progress"] for m in received} == {55}
    pubsub.close()


def test_progress_write_after_redis_lost_the_job_writes_the_whole_state(app, plain_redis):
    store = current_jobs_store(app)
    prefix = app.config["EPM_KEY_PREFIX"]
    job = _job()
    store.write(job, Guard.RECORD)
    plain_redis.delete(f"{prefix}job:j1", f"{prefix}user:7:jobs")
    job.progress, job.seq = 60, next_seq(job.seq)
    assert store.save_progress(job) is True
    data = plain_redis.hgetall(f"{prefix}job:j1")
    assert data["progress"] == "60" and data["job_type"] == "demo_countdown" and data["user_id"] == "7"
    assert data["created_at"] == job.created_at and data["title"] == "Demo"
    assert plain_redis.zscore(f"{prefix}user:7:jobs", "j1") is not None


def test_a_checkpoint_goes_only_into_a_hash_that_holds_the_job(app, plain_redis):
    store = current_jobs_store(app)
    key = f"{app.config['EPM_KEY_PREFIX']}job:j1"
    store.write(_job(), Guard.RECORD)
    assert store.checkpoint("j1", {"step": 3, "outline": ["a", "b"]}) is True
    assert store.checkpoints("j1") == {"step": 3, "outline": ["a", "b"]}
    plain_redis.delete(key)  # Redis lost it (FLUSHALL, a restart without persistence)
    assert store.checkpoint("j1", {"step": 4}) is False
    assert plain_redis.exists(key) == 0, "a bare HSET would leave a hash of checkpoints alone"


def test_a_hash_a_cancel_request_left_after_redis_lost_the_job_is_no_job(app, plain_redis):
    store = current_jobs_store(app)
    store.write(_job(), Guard.RECORD)
    plain_redis.delete(f"{app.config['EPM_KEY_PREFIX']}job:j1")
    store.request_cancel("j1")  # the runner elsewhere sees the flag at its next heartbeat
    assert store.cancel_requested("j1")
    assert store.load("j1") is None and store.load_many(["j1"]) == {}
    # The job written back (here: put back as finished) goes over it, and takes the flag away.
    ended = _job(status=JobStatus.CANCELLED, seq=next_seq(next_seq(0)))
    assert store.write(ended, Guard.MISSING, ttl=60) == WRITTEN
    assert store.load("j1").user_id == "7" and not store.cancel_requested("j1")


def test_a_cancel_request_s_hash_expires_unless_the_running_job_is_written_back_around_it(app, plain_redis):
    store = current_jobs_store(app)
    key = f"{app.config['EPM_KEY_PREFIX']}job:j1"
    store.write(_job(), Guard.RECORD)
    store.request_cancel("j1")
    assert plain_redis.ttl(key) == -1  # a job's hash: the flag changes nothing else
    plain_redis.delete(key)  # Redis lost it; no runner may ever come back for the flag
    store.request_cancel("j1")
    assert 0 < plain_redis.ttl(key) <= store.retention
    # The runner writes the running job back around the flag: its hash lasts again, flag and all.
    assert store.write(_job(progress=60, seq=next_seq(next_seq(0))), Guard.RUNNER) == WRITTEN
    assert plain_redis.ttl(key) == -1
    assert store.cancel_requested("j1") and store.load("j1").progress == 60


def test_an_orphan_whose_hash_redis_lost_is_ended_from_the_database_s_copy(app, plain_redis):
    store = current_jobs_store(app)
    row = _job()
    store.write(row, Guard.RECORD)
    plain_redis.delete(f"{app.config['EPM_KEY_PREFIX']}job:j1", store.active_key)
    store.request_cancel("j1")
    ended = end_orphan(store, "j1", JobStatus.CANCELLED, error_code=None, error=None, fallback=row)
    assert ended is not None and ended.status is JobStatus.CANCELLED
    kept = store.load("j1")
    assert (kept.status, kept.user_id, kept.job_type, kept.title) == (JobStatus.CANCELLED, "7", "demo_countdown",
                                                                      "Demo")


def test_progress_write_never_overwrites_a_terminal_state(app, plain_redis):
    store = current_jobs_store(app)
    prefix = app.config["EPM_KEY_PREFIX"]
    job = _job()
    store.write(job, Guard.RECORD)
    plain_redis.hset(f"{prefix}job:j1", "status", "failed")
    job.progress, job.seq = 70, next_seq(job.seq)
    assert store.save_progress(job) is False
    data = plain_redis.hgetall(f"{prefix}job:j1")
    assert data["status"] == "failed" and data["progress"] == "40"


def test_terminal_hash_expires_only_after_the_database_has_it(app, plain_redis):
    prefix = app.config["EPM_KEY_PREFIX"]
    with app.app_context():
        service = current_jobs()
        job = service.start("demo_countdown", user_id="7", params={"steps": 2})
        wait_for(lambda: service.store.load(job.id).is_terminal, message="job to finish")
        wait_for(lambda: plain_redis.ttl(f"{prefix}job:{job.id}") > 0, message="retention TTL")
        ttl = plain_redis.ttl(f"{prefix}job:{job.id}")
        assert 0 < ttl <= app.config["EPM_RETENTION_SECONDS"]
        assert plain_redis.zscore(f"{prefix}jobs:active", job.id) is None
        assert plain_redis.exists(f"{prefix}lock:7:-:demo_countdown") == 0


def test_user_index_keeps_only_the_newest_jobs(app):
    store = current_jobs_store(app)
    store.keep_per_user = 3
    for n in range(5):
        store.write(_job(id=f"j{n}", created_at=f"2026-01-0{n + 1}T00:00:00.000Z"), Guard.RECORD)
    assert store.recent_ids("7") == ["j4", "j3", "j2"]


def test_lock_admits_one_job_per_user_session_and_type(app):
    store = current_jobs_store(app)
    first, second = _job(id="a"), _job(id="b")
    assert store.acquire_lock(first) is None
    assert store.acquire_lock(second) == "a"
    store.release_lock(second)  # not the holder: nothing happens
    assert store.acquire_lock(second) == "a"
    store.release_lock(first)
    assert store.acquire_lock(second) is None


def test_reaper_never_interrupts_a_job_whose_heartbeat_is_fresh(app):
    store = current_jobs_store(app)
    store.write(_job(), Guard.RECORD)
    assert end_orphan(store, "j1", JobStatus.FAILED, error_code="interrupted", error="x") is None
    store.redis.zadd(store.active_key, {"j1": 1.0})  # deadline long past
    reaped = end_orphan(store, "j1", JobStatus.FAILED, error_code="interrupted", error="gone")
    assert reaped is not None and reaped.status is JobStatus.FAILED and reaped.error_code == "interrupted"
    assert store.load("j1").status is JobStatus.FAILED
    assert end_orphan(store, "j1", JobStatus.FAILED, error_code="interrupted", error="x") is None


def test_seq_only_grows_whoever_writes():
    previous = next_seq(0)
    assert next_seq(previous) > previous
    assert next_seq(previous + 10**9) == previous + 10**9 + 1


_chatty_started = threading.Event()


@operation("test_chatty", title="Chatty", requires_session=False)
def _chatty(ctx: JobContext) -> dict:
    for n in range(10_000):
        ctx.progress(n / 100, f"update {n}")
    return {"summary": "done"}


def test_a_chatty_job_is_coalesced_and_its_last_state_always_arrives(app, plain_redis):
    prefix = app.config["EPM_KEY_PREFIX"]
    pubsub = plain_redis.pubsub()
    pubsub.psubscribe(f"{prefix}job:*")
    wait_for(lambda: pubsub.get_message(timeout=0.2) is not None, message="psubscribe confirmation")
    with app.app_context():
        service = current_jobs()
        job = service.start("test_chatty", user_id="7")
        wait_for(lambda: (j := service.store.load(job.id)) and j.is_terminal, message="chatty job to finish")
    events = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "pmessage":
            events.append(json.loads(message["data"]))
    pubsub.close()
    assert events[-1]["status"] == "completed" and events[-1]["progress"] == 100
    assert len(events) < 200, f"10,000 progress calls became {len(events)} events"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def current_jobs_store(app):
    return app.extensions["epm.jobs"].store


@pytest.fixture(autouse=True)
def _no_leftover_jobs(app):
    yield
    app.extensions["epm.jobs"].runner.shutdown(grace=5)


def test_progress_event_is_the_jobs_json_byte_for_byte(app, plain_redis):
    """The progress write encodes its event from a template per job: it must be exactly ``job.to_json()``."""
    store = current_jobs_store(app)
    job = _job()
    store.write(job, Guard.RECORD)
    pubsub = _follow_job_and_user(app, plain_redis)
    reports = [(41, "Étape 2 «café» \"quoted\"\n"), (42, ""), (43, "A new template")]
    for progress, message in reports:
        job.progress, job.message, job.seq, job.updated_at = progress, message, next_seq(job.seq), iso(utcnow())
        if progress == 43:
            job.title, job.extra["acknowledged"] = "Renamed", False  # a field outside the report: a new template
        assert store.save_progress(job) is True
        received = _two_events(pubsub)
        assert [m["data"] for m in received] == [job.to_json(), job.to_json()]
    pubsub.close()


STEPS = ("Reading", "Deriving", "Sizing", "Dating")


def test_a_report_after_a_new_step_sends_the_new_step(app, plain_redis):
    """A step changes the timeline in place (the same dict): the template made before it must not be used."""
    from epm.jobs import steps

    store = current_jobs_store(app)
    job = _job(started_at=iso(utcnow()))
    job.timeline = steps.plan(STEPS)
    steps.advance(job, STEPS[0])
    store.write(job, Guard.RECORD)
    pubsub = _follow_job_and_user(app, plain_redis)
    job.message, job.seq = "Reading the canvas", next_seq(job.seq)
    assert store.save_progress(job) is True
    assert {json.loads(m["data"])["timeline"]["step"] for m in _two_events(pubsub)} == {0}
    steps.advance(job, STEPS[1])
    job.seq = next_seq(job.seq)
    assert store.write(job, Guard.RUNNER) == WRITTEN
    job.message, job.seq = "Deriving the tasks", next_seq(job.seq)
    _two_events(pubsub)
    assert store.save_progress(job) is True
    events = [json.loads(m["data"]) for m in _two_events(pubsub)]
    assert [(event["timeline"]["step"], event["message"]) for event in events] == [(1, "Deriving the tasks")] * 2
    assert events[0]["timeline"]["steps"][0]["ended_at"] is not None
    pubsub.close()


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(),
                 st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.floats(), st.integers()), max_size=3)))
def test_a_progress_event_encodes_each_moving_value_as_json_dumps_does(value):
    from epm.jobs.store import _encode

    assert _encode(value) == json.dumps(value, separators=(",", ":"), default=str)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(min_value=0, max_value=4e9, allow_nan=False),
                 # the edges: a fraction that rounds up into the next second, and one just over a millisecond
                 st.integers(0, 4_000_000_000).map(lambda second: second + 0.9999996),
                 st.integers(0, 4_000_000_000).map(lambda second: second + 0.0010004)))
def test_the_pulses_timestamp_is_the_one_iso_gives_for_the_same_instant(instant):
    from datetime import UTC, datetime

    from epm.jobs.job import iso_now

    expected = iso(datetime.fromtimestamp(instant, UTC))
    assert iso_now(instant) == expected
    # The second cached for another instant does not leak into this one's.
    iso_now(instant + 1.0)
    assert iso_now(instant) == expected
