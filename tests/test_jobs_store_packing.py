"""The progress write's own packing (JobStore.progress_command): the bytes redis-py would send, the event
``job.to_json()`` would give. Pure: fakeredis only, so it runs once, not per backend as tests/test_jobs_store.py's
tests do."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import Connection

from epm.jobs import steps
from epm.jobs.job import Job, JobStatus, iso
from epm.jobs.store import Guard, JobStore

STEPS = ("Reading", "Deriving", "Sizing", "Dating")


def _job(**kw) -> Job:
    base = dict(id="j1", job_type="demo_countdown", user_id="7", title="Demo", status=JobStatus.RUNNING,
                progress=40, message="Halfway", session_id="3", seq=1, created_at="2026-12-01T20:00:00.000Z")
    base.update(kw)
    return Job(**base)


_time = st.integers(1_600_000_000_000, 1_900_000_000_000).map(lambda ms: iso(datetime.fromtimestamp(ms / 1000, UTC)))


@st.composite
def _reporting_jobs(draw) -> tuple[Job, float]:
    """A running job as its reports find it: any message, maybe started, in any step of a timeline, with or
    without an estimate (medians known or not), with extra fields; and an instant to send it at."""
    started = draw(st.none() | _time)
    job = _job(progress=draw(st.integers(0, 100)), message=draw(st.none() | st.text()), started_at=started,
               seq=draw(st.integers(1, 2**53)), updated_at=draw(st.none() | _time), attempt=draw(st.integers(1, 9)),
               extra=draw(st.dictionaries(st.sampled_from(["acknowledged", "url"]), st.booleans() | st.text(),
                                          max_size=2)))
    if draw(st.booleans()):
        job.timeline = steps.plan(STEPS)
        for name in STEPS[:draw(st.integers(0, len(STEPS)))]:
            steps.advance(job, name)
            job.timeline["steps"][job.timeline["step"]]["started_at"] = draw(_time)
    if draw(st.booleans()):
        medians = draw(st.lists(st.none() | st.floats(0, 1e5), min_size=len(STEPS), max_size=len(STEPS)))
        job.estimate = {"basis": "user", "runs": 3, "seconds": draw(st.floats(0, 1e6)), "steps": medians}
    now = draw(st.floats(1_600_000_000, 1_900_000_000))
    return job, now


@settings(max_examples=300, deadline=None)
@given(_reporting_jobs(), st.data())
def test_the_packed_progress_command_is_redis_pys_and_its_event_the_jobs_json(shaped, data):
    """The progress write packs its EVALSHA itself, from a template per job: byte for byte what redis-py would
    send with ``job.to_json()`` as the event, report after report, across the job's next step."""
    job, now = shaped
    store = JobStore(fakeredis.FakeRedis(decode_responses=True))
    sha = store._progress_script.sha
    for report in range(3):
        if report == 2 and job.timeline and job.timeline["step"] is not None and job.timeline["step"] + 1 < len(STEPS):
            steps.advance(job, STEPS[job.timeline["step"] + 1])  # a new step: the runner writes the whole job
            store.write(job, Guard.RECORD)
        job.progress, job.message = data.draw(st.integers(0, 100)), data.draw(st.none() | st.text())
        job.seq, now = job.seq + 1, now + data.draw(st.floats(0, 100))
        expected = b"".join(Connection().pack_command(
            "EVALSHA", sha, 2, "epm:job:j1", "epm:user:7:version", "epm:job:j1", "epm:user:7", job.to_json(now),
            job.progress, job.message or "", job.seq, job.updated_at or "", job.attempt))
        assert store.progress_command(job, now) == expected
