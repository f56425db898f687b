"""The step timeline (issue 16, item 2): each declared step's start and end in the job's live state (Redis), in
the API and the events, in its PostgreSQL record once it ended; the durations of completed runs kept in Redis
and the estimate of the time left they give, with its basis.

The app-level tests run on both backends through a probe operation whose steps the test releases one by one;
the live-server test follows real EPM generations on gunicorn+gevent through their event streams.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from epm.jobs import OperationError, steps
from epm.jobs.job import Job, JobStatus, iso, parse_iso, time_left
from epm.jobs.registry import operation, unregister
from epm.jobs.store import Guard
from epm.jobs.upkeep import end_orphan
from tests.support import Browserish, LiveServer, recorded_row, wait_for

PROBE_STEPS = ("Gather", "Build", "Save")


class Probe:
    """An operation with three declared steps that waits at each gate until the test opens it."""

    def __init__(self):
        self.gates = [threading.Event() for _ in range(3)]

    def run(self, ctx):
        ctx.stage(0, "Gather")
        self.gates[0].wait(15)
        ctx.progress(30, "Still gathering (not a step)")
        self.gates[1].wait(15)
        ctx.stage(50, "Build")
        self.gates[2].wait(15)
        if ctx.params.get("fail"):
            raise OperationError("The probe was told to fail.", code="probe_failure")
        ctx.stage(90, "Save")
        return {"summary": "probed"}


@pytest.fixture
def probe():
    made = Probe()
    operation("steps_probe", title="Steps probe", requires_session=False, steps=PROBE_STEPS)(made.run)
    yield made
    for gate in made.gates:
        gate.set()
    unregister("steps_probe")


def _start(client, **params):
    response = client.post("/api/background-jobs", json={"job_type": "steps_probe", "params": params})
    assert response.status_code == 202, response.json
    return response.json["job"]


def _api(client, job_id):
    return client.get(f"/api/background-jobs/{job_id}").json["job"]


def _hash_timeline(plain_redis, app, job_id):
    raw = plain_redis.hget(app.extensions["epm.jobs"].store.job_key(job_id), "timeline")
    return json.loads(raw) if raw else None


def test_each_step_starts_and_ends_in_redis_and_the_api_and_its_log_is_kept_in_the_database(
        app, auth_client, plain_redis, probe):
    job = _start(auth_client)
    assert job["timeline"] is None and job["estimate"] is None, "pending: no run has begun"
    key = app.extensions["epm.jobs"].store.job_key(job["id"])

    running = wait_for(lambda: (t := _hash_timeline(plain_redis, app, job["id"])) and t["step"] == 0 and t,
                       message="the first step in the hash")
    assert [step["name"] for step in running["steps"]] == list(PROBE_STEPS)
    first = running["steps"][0]
    assert first["started_at"] and first["ended_at"] is None and first["seconds"] is None
    assert all(step["started_at"] is None for step in running["steps"][1:])
    seen = _api(auth_client, job["id"])
    assert seen["timeline"] == running and seen["status"] == "running" and seen["elapsed"] >= 0

    # A report that is not a step leaves the timeline field alone: the progress write does not touch it.
    plain_redis.hset(key, "timeline", json.dumps({"step": 0, "steps": [], "marker": "untouched"}))
    held = time.monotonic()
    probe.gates[0].set()
    wait_for(lambda: plain_redis.hget(key, "message") == "Still gathering (not a step)", message="the report")
    assert json.loads(plain_redis.hget(key, "timeline"))["marker"] == "untouched"

    time.sleep(0.3)  # the first step lasts at least this long (a bound the test measures, not a sync)
    probe.gates[1].set()
    moved = wait_for(lambda: (t := _hash_timeline(plain_redis, app, job["id"])) and t.get("step") == 1 and t,
                     message="the second step")
    assert "marker" not in moved, "a new step writes the whole timeline again"
    gather, build = moved["steps"][0], moved["steps"][1]
    assert gather["ended_at"] == build["started_at"] and build["ended_at"] is None
    assert 0.3 <= gather["seconds"] < time.monotonic() - held + 1.0

    probe.gates[2].set()
    done = wait_for(lambda: (j := _api(auth_client, job["id"]))["terminal"] and j, message="the end")
    assert done["status"] == "completed" and done["estimate"] is None
    timeline = done["timeline"]
    assert timeline["step"] == 2
    assert [step["name"] for step in timeline["steps"]] == list(PROBE_STEPS)
    assert all(step["started_at"] and step["ended_at"] and step["seconds"] is not None for step in timeline["steps"])
    for before, after in zip(timeline["steps"], timeline["steps"][1:], strict=False):
        assert before["ended_at"] == after["started_at"]
    assert timeline["steps"][-1]["ended_at"] == done["completed_at"], "the terminal state ends the last step"
    assert timeline["steps"][0]["started_at"] >= done["started_at"]
    assert done["elapsed"] == pytest.approx((parse_iso(done["completed_at"])
                                             - parse_iso(done["started_at"])).total_seconds(), abs=0.002)

    row = recorded_row(app, job["id"])
    assert row.timeline == timeline and row.to_job().timeline == timeline
    # When Redis has let the hash go, the API answers the step log from the database.
    plain_redis.delete(key)
    assert _api(auth_client, job["id"])["timeline"] == timeline


def test_a_failed_job_stops_at_its_step_and_keeps_no_history(app, auth_client, plain_redis, probe):
    for gate in probe.gates:
        gate.set()
    job = _start(auth_client, fail=True)
    done = wait_for(lambda: (j := _api(auth_client, job["id"]))["terminal"] and j, message="the end")
    assert done["status"] == "failed" and done["error_code"] == "probe_failure"
    timeline = done["timeline"]
    assert timeline["step"] == 1, "it failed in Build"
    assert timeline["steps"][1]["ended_at"] == done["completed_at"]
    assert timeline["steps"][2] == {"name": "Save", "started_at": None, "ended_at": None, "seconds": None}
    store = app.extensions["epm.jobs"].store
    assert plain_redis.llen(store.history_key("steps_probe")) == 0, "only completed runs are history"

    page = auth_client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert '<li class="step step-done"><span class="step-mark" aria-hidden="true"></span><span class="step-name">' \
           'Gather</span><span class="visually-hidden"> (done)</span><span class="step-time">' in page
    assert '<li class="step step-stopped">' in page and '<li class="step step-todo">' in page
    retry = auth_client.post(f"/api/background-jobs/{job['id']}/retry").json["job"]
    wait_for(lambda: _api(auth_client, retry["id"])["terminal"], message="the retry's end")
    page = auth_client.get(f"/jobs/{retry['id']}").get_data(as_text=True)
    assert (f'A retry of <a href="/jobs/{job["id"]}">an earlier attempt</a>, which failed in step 2 of 3, '
            "“Build”.") in page


def test_completed_runs_give_the_next_runs_an_estimate_with_its_basis(app, auth_client, user, plain_redis, probe):
    for gate in probe.gates:
        gate.set()
    store = app.extensions["epm.jobs"].store
    for _ in range(4):
        job = _start(auth_client)
        done = wait_for(lambda j=job: (d := _api(auth_client, j["id"]))["terminal"] and d, message="the end")
        assert done["status"] == "completed"
    mine = [json.loads(raw) for raw in plain_redis.lrange(store.user_history_key(str(user.id), "steps_probe"), 0, -1)]
    everyone = plain_redis.lrange(store.history_key("steps_probe"), 0, -1)
    assert len(mine) == 4 and len(everyone) == 4
    assert all(len(entry) == 1 + len(PROBE_STEPS) and entry[0] >= sum(entry[1:]) - 0.01 for entry in mine)
    assert plain_redis.ttl(store.user_history_key(str(user.id), "steps_probe")) > 0

    probe.gates[2].clear()  # the next run waits in Build, where the test reads its estimate
    job = _start(auth_client)
    running = wait_for(lambda: (j := _api(auth_client, job["id"]))["timeline"] and j["timeline"]["step"] == 1 and j,
                       message="the next run in Build")
    estimate = running["estimate"]
    assert estimate["basis"] == "user" and estimate["runs"] == 4
    medians = [sorted(entry[index] for entry in mine)[1:3] for index in range(1 + len(PROBE_STEPS))]
    assert estimate["seconds"] == pytest.approx(sum(medians[0]) / 2, abs=0.002)
    assert estimate["steps"] == pytest.approx([sum(pair) / 2 for pair in medians[1:]], abs=0.002)
    assert 0 <= estimate["left"] <= sum(estimate["steps"][1:]) + 0.001
    probe.gates[2].set()
    wait_for(lambda: _api(auth_client, job["id"])["terminal"], message="the end")


def test_a_completed_runs_durations_are_kept_before_its_end_is_written(app, auth_client, user, plain_redis, probe,
                                                                       monkeypatch):
    """A user who starts the next run the moment this one shows "Completed" gets an estimate that counts it
    (CI's live test of four generations in a row once saw the third missing)."""
    for gate in probe.gates:
        gate.set()
    store = app.extensions["epm.jobs"].store
    history = store.user_history_key(str(user.id), "steps_probe")
    at_the_end: list[int] = []
    write = store.write

    def watched(job, *args, **kwargs):
        if job.is_terminal:
            at_the_end.append(plain_redis.llen(history))
        return write(job, *args, **kwargs)

    monkeypatch.setattr(store, "write", watched)
    job = _start(auth_client)
    done = wait_for(lambda: (d := _api(auth_client, job["id"]))["terminal"] and d, message="the end")
    assert done["status"] == "completed"
    assert at_the_end[:1] == [1], "the run was in its history when its end was written"
    (entry,) = [json.loads(raw) for raw in plain_redis.lrange(history, 0, -1)]
    total = (parse_iso(done["completed_at"]) - parse_iso(done["started_at"])).total_seconds()
    assert entry[0] == pytest.approx(total, abs=0.002)  # the same end as the one written
    assert entry[1:] == [step["seconds"] for step in done["timeline"]["steps"]]


def test_the_estimate_says_whose_runs_it_is_based_on(app, plain_redis):
    store = app.extensions["epm.jobs"].store
    names = ("A", "B")

    def completed(user_id: str, seconds: tuple[float, float]) -> Job:
        start = datetime(2026, 12, 1, tzinfo=UTC)
        timeline = steps.plan(names)
        at = start
        for step, length in zip(timeline["steps"], seconds, strict=True):
            step.update(started_at=iso(at), ended_at=iso(at + timedelta(seconds=length)), seconds=length)
            at += timedelta(seconds=length)
        return Job(id=uuid.uuid4().hex, job_type="estimated", user_id=user_id, status=JobStatus.COMPLETED,
                   started_at=iso(start), completed_at=iso(at), timeline=timeline)

    probe_job = Job(id="x", job_type="estimated", user_id="me")
    assert steps.load_estimate(store, probe_job, 2) is None, "no history: no estimate"
    for length in (10, 20, 60):
        steps.remember(store, completed("someone", (length / 2, length / 2)))
    everyone = steps.load_estimate(store, probe_job, 2)
    assert everyone == {"basis": "everyone", "runs": 3, "seconds": 20.0, "steps": [10.0, 10.0]}
    steps.remember(store, completed("me", (1, 1)))
    steps.remember(store, completed("me", (2, 2)))
    assert steps.load_estimate(store, probe_job, 2)["basis"] == "everyone", "two own runs are not enough"
    steps.remember(store, completed("me", (3, 3)))
    mine = steps.load_estimate(store, probe_job, 2)
    assert mine == {"basis": "user", "runs": 3, "seconds": 4.0, "steps": [2.0, 2.0]}
    resumed = completed("me", (100, 100))
    resumed.attempt = 2
    steps.remember(store, resumed)
    assert steps.load_estimate(store, probe_job, 2) == mine, "a resumed run's total holds its downtime: not kept"
    # After the operation's steps changed, step medians are unknown; the total still estimates.
    assert steps.load_estimate(store, probe_job, 3)["steps"] == [None, None, None]
    for _ in range(25):
        steps.remember(store, completed("me", (1, 1)))
    assert plain_redis.llen(store.user_history_key("me", "estimated")) == steps.HISTORY_KEEP


def test_time_left_counts_the_steps_ahead_and_what_is_left_of_the_current_one():
    now = datetime(2026, 12, 1, 10, 0, 10, tzinfo=UTC)
    timeline = steps.plan(("A", "B", "C"))
    estimate = {"basis": "user", "runs": 3, "seconds": 30.0, "steps": [10.0, 10.0, 10.0]}
    started = iso(now - timedelta(seconds=14))
    assert time_left(timeline, estimate, started, now) == 30.0, "running, no step yet: all of them"
    timeline["step"] = 1
    timeline["steps"][1]["started_at"] = iso(now - timedelta(seconds=4))
    assert time_left(timeline, estimate, started, now) == 16.0, "6 s of B and 10 s of C"
    timeline["steps"][1]["started_at"] = iso(now - timedelta(seconds=40))
    assert time_left(timeline, estimate, started, now) == 10.0, "B overran: C is still ahead"
    unknown = {**estimate, "steps": [10.0, None, 10.0]}
    assert time_left(timeline, unknown, started, now) == 16.0, "a step without a median: the total less 14 s"
    assert time_left(timeline, None, started, now) is None


def test_a_job_ended_by_the_reaper_ends_its_step_when_its_runner_was_last_heard_of(app):
    store = app.extensions["epm.jobs"].store
    last_heard = iso(datetime.now(UTC) - timedelta(seconds=40))
    timeline = steps.plan(PROBE_STEPS)
    timeline["step"] = 0
    timeline["steps"][0]["started_at"] = iso(datetime.now(UTC) - timedelta(seconds=45))
    job = Job(id=uuid.uuid4().hex, job_type="steps_probe", user_id="u1", status=JobStatus.RUNNING,
              started_at=timeline["steps"][0]["started_at"], updated_at=last_heard, seq=1, timeline=timeline)
    store.write(job, Guard.RECORD)
    ended = end_orphan(store, job.id, JobStatus.FAILED, error_code="interrupted", error="gone",
                       require_overdue=False)
    assert ended.timeline["steps"][0]["ended_at"] == last_heard
    assert ended.timeline["steps"][0]["seconds"] == pytest.approx(5.0, abs=0.01)
    assert store.load(job.id).timeline == ended.timeline


def test_step_times_read_like_a_ci_run_page():
    assert [steps.step_time(value) for value in (None, 0.04, 0.7, 9.96, 42.5, 65, 3720)] == [
        "", "0.0 s", "0.7 s", "9.9 s", "42 s", "1 min 05 s", "1 h 02 min"]
    assert steps.step_time(3.8, running=True) == "3 s"


# -- on real servers: the events of EPM generations --------------------------------------------------------
@pytest.fixture(scope="module")
def epm_server(backend_env):
    env = backend_env("steps", LOG_LEVEL="WARNING", EPM_STAGE_SECONDS="0.25", EPM_SSE_HEARTBEAT="1")
    live = LiveServer(env, workers=2 if env["REDIS_URL"] else 1).start()
    yield live
    live.stop()


def _generate(user: Browserish, session_id: int) -> tuple[dict, list[dict]]:
    """Start an EPM generation and follow its event stream to the end: (the start's answer, the events' jobs)."""
    response = user.post(f"/api/sessions/{session_id}/epm_generation", json={})
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    seen = []
    for event in user.events(f"/api/background-jobs/{job['id']}/events"):
        if event.get("event") == "job":
            seen.append(event["data"])
            if event["data"]["terminal"]:
                break
    return job, seen


@pytest.mark.live
def test_the_events_of_an_epm_generation_carry_its_timeline_and_estimate(epm_server):
    import epm.operations  # noqa: F401  (registers the operations)
    from epm.jobs.registry import get_operation

    declared = list(get_operation("epm_generation").steps)
    first, second = Browserish(epm_server.url).signup(), Browserish(epm_server.url).signup()
    try:
        session = first.post("/api/sessions", {"name": "Timeline", "objectives": ["Open a shop"],
                                                "deadline": "2028-01-31", "team_size": 4}).json()["session"]
        runs = [_generate(first, session["id"]) for _ in range(4)]
        for number, (_job, events) in enumerate(runs):
            final = events[-1]
            assert final["status"] == "completed", final
            timeline = final["timeline"]
            assert [step["name"] for step in timeline["steps"]] == declared
            assert all(step["seconds"] is not None and step["seconds"] >= 0.1 for step in timeline["steps"])
            running = [event for event in events if event["status"] == "running" and event["timeline"]]
            moves = [event["timeline"]["step"] for event in running]
            assert moves == sorted(moves) and len(set(moves)) >= len(declared) // 2, moves
            estimate = next((event["estimate"] for event in running if event["estimate"]), None)
            if number == 0:
                assert estimate is None, "no earlier run: no estimate, no invented number"
            else:
                basis = "user" if number >= 3 else "everyone"
                assert (estimate["basis"], estimate["runs"]) == (basis, number), estimate
                assert len(estimate["steps"]) == len(declared) and None not in estimate["steps"]
                lefts = [event["estimate"]["left"] for event in running if event["estimate"]]
                assert lefts[0] > 0 and lefts == sorted(lefts, reverse=True), lefts
            assert final["estimate"] is None and final["elapsed"] >= sum(s["seconds"] for s in timeline["steps"])
        # Someone else's first run: not enough runs of their own, so everyone's four are the basis.
        other = second.post("/api/sessions", {"name": "Other", "objectives": ["Grow"]}).json()["session"]
        _, events = _generate(second, other["id"])
        estimate = next(event["estimate"] for event in events if event["estimate"])
        assert (estimate["basis"], estimate["runs"]) == ("everyone", 4)
        page = first.get(f"/jobs/{runs[-1][0]['id']}").text
        assert page.count('class="step step-done"') == len(declared) and "Saving the program" in page
    finally:
        first.close()
        second.close()
