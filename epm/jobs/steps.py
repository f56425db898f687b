"""The step timeline of a job, like a CI run page, and an honest estimate of the time it has left.

An operation declares its steps in order (``@operation(steps=...)``). When its run begins, the job's
``timeline`` lists them, all to come; a stage whose message is a declared step starts that step (server
time) and ends the one running, and the terminal state ends the last one. The timeline is a field of the
job's live state: a JSON field of its Redis hash, in the API's job and in every event, and once the job
ended its step log in PostgreSQL (``background_jobs.timeline``)::

    {"step": 2, "steps": [{"name": "Reading the session", "started_at": "…Z", "ended_at": "…Z",
                           "seconds": 0.702}, …, {"name": "Saving", "started_at": null, …}]}

``step`` is the index of the step running now (the last one reached, once the job ended; null before the
first). It changes a few times per run, so the runner writes it only then, with the whole state at once
(``LiveJob.report``); the progress reports in between (one Lua script, ``store._PROGRESS_LUA``) leave it alone.

When a run completes, its total and per-step durations go into two capped lists in Redis, the user's and
everyone's for that operation (``JobStore.history_key``). A run that begins reads them once: its
``estimate`` is the median of the user's runs when there are ``OWN_RUNS`` of them, else of everyone's,
and none without history. What the API and the events add at the moment they are sent (``sent_fields``):
``elapsed`` and ``estimate.left``, the median time of the steps still ahead plus what is left of the
current one's median. Nothing here invents a percentage.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from .job import Job, JobStatus, iso, parse_iso, utcnow

if TYPE_CHECKING:
    from .store import JobStore

log = logging.getLogger("epm.jobs")

#: runs kept per list (the user's and everyone's, per operation)
HISTORY_KEEP = 20
#: the user's own runs needed before their history is the basis of an estimate (else everyone's)
OWN_RUNS = 3
#: a user's history goes when they ran none of that operation for this long
HISTORY_TTL = 90 * 86400


# -- the timeline ------------------------------------------------------------------------------------
def plan(steps: Sequence[str]) -> dict[str, Any] | None:
    """A timeline with every declared step to come (None for an operation without steps)."""
    if not steps:
        return None
    return {"step": None, "steps": [{"name": name, "started_at": None, "ended_at": None, "seconds": None}
                                    for name in steps]}


def begin(job: Job, steps: Sequence[str], store: JobStore) -> None:
    """A run of ``job`` begins (or another attempt resumes it): its steps all to come, its estimate read."""
    job.timeline = plan(steps)
    job.estimate = load_estimate(store, job, len(steps)) if steps else None


def advance(job: Job, message: str | None) -> bool:
    """Start the declared step named ``message``, ending the one running; True if the timeline changed.

    A message that is not a step (research's "Fetching example.com (1 of 3)") belongs to the running step.
    A step reported again from further on (an operation that starts over) clears the steps after it.
    """
    timeline = job.timeline
    if not timeline or message is None:
        return False
    index = next((n for n, step in enumerate(timeline["steps"]) if step["name"] == message), None)
    if index is None or index == timeline["step"]:
        return False
    now = iso(utcnow())
    _close(timeline, now)
    for step in timeline["steps"][index:]:
        step.update(started_at=None, ended_at=None, seconds=None)
    timeline["steps"][index]["started_at"] = now
    timeline["step"] = index
    return True


def finish(job: Job, at: str | None = None) -> None:
    """``job`` reached its terminal state: the running step ends ``at`` (its ``completed_at`` by default)."""
    if job.timeline:
        _close(job.timeline, at or job.completed_at or iso(utcnow()))
    job.estimate = None


def _close(timeline: dict[str, Any], at: str) -> None:
    index = timeline.get("step")
    if index is None:
        return
    step = timeline["steps"][index]
    if step["started_at"] and not step["ended_at"]:
        step["ended_at"] = at
        step["seconds"] = _seconds(step["started_at"], at)


def _seconds(start: str | None, end: str | None) -> float | None:
    began, ended = parse_iso(start), parse_iso(end)
    if began is None or ended is None:
        return None
    return round(max(0.0, (ended - began).total_seconds()), 3)


# -- history and the estimate ---------------------------------------------------------------------------
def remember_ending(store: JobStore, job: Job, completed_at: str) -> None:
    """``remember`` for a run about to be written as completed at ``completed_at``, before that end is seen:
    a user who starts the next run as soon as this one shows "Completed" gets an estimate that counts it.
    ``job`` itself is left as it is (its end is set when it is written)."""
    ended = replace(job, status=JobStatus.COMPLETED, completed_at=completed_at, timeline=deepcopy(job.timeline))
    finish(ended)
    remember(store, ended)


def remember(store: JobStore, job: Job) -> None:
    """Push a completed run's durations into its operation's history, the user's and everyone's.

    One entry per run, ``[total, step 1, step 2, …]`` in seconds (null for a step without a duration),
    in one pipelined round trip. Only a run that completed in one attempt: a resumed one's total holds
    the time its process was gone. Best effort: a Redis failure costs one sample, never the job.
    """
    if job.status is not JobStatus.COMPLETED or not job.timeline or job.attempt != 1:
        return
    total = _seconds(job.started_at, job.completed_at)
    if total is None:
        return
    entry = json.dumps([total, *(step["seconds"] for step in job.timeline["steps"])], separators=(",", ":"))
    mine = store.user_history_key(job.user_id, job.job_type)
    try:
        pipe = store.redis.pipeline(transaction=False)
        for key in (mine, store.history_key(job.job_type)):
            pipe.lpush(key, entry)
            pipe.ltrim(key, 0, HISTORY_KEEP - 1)
        pipe.expire(mine, HISTORY_TTL)
        pipe.execute()
    except redis.RedisError as exc:
        log.info("job %s: its durations were not kept for estimates (%s)", job.id, exc)


def load_estimate(store: JobStore, job: Job, count: int) -> dict[str, Any] | None:
    """The estimate for a run of ``job``'s operation with ``count`` steps; None without history.

    ``{"basis": "user" | "everyone", "runs": n, "seconds": median total, "steps": [median per step]}``.
    A step's median counts only runs recorded with the same number of steps (the declaration may change).
    """
    try:
        pipe = store.redis.pipeline(transaction=False)
        pipe.lrange(store.user_history_key(job.user_id, job.job_type), 0, HISTORY_KEEP - 1)
        pipe.lrange(store.history_key(job.job_type), 0, HISTORY_KEEP - 1)
        own, everyone = ([_entry(raw) for raw in entries] for entries in pipe.execute())
    except redis.RedisError as exc:
        log.info("job %s: no estimate (%s)", job.id, exc)
        return None
    basis, runs = ("user", own) if len([run for run in own if run]) >= OWN_RUNS else ("everyone", everyone)
    runs = [run for run in runs if run]
    if not runs:
        return None
    steps = []
    for index in range(1, count + 1):
        samples = [run[index] for run in runs if len(run) == count + 1 and run[index] is not None]
        steps.append(round(statistics.median(samples), 3) if samples else None)
    return {"basis": basis, "runs": len(runs), "seconds": round(statistics.median(run[0] for run in runs), 3),
            "steps": steps}


def _entry(raw: str) -> list[Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, list) and value and isinstance(value[0], int | float) else None


# -- pages -----------------------------------------------------------------------------------------------
def rows(job: Job, declared: Sequence[str], now: datetime | None = None) -> list[dict[str, Any]]:
    """Each step as a page shows it: ``{"name", "state", "seconds", "started_at"}``.

    ``state`` is done, current (running now), stopped (where a failed or cancelled job ended) or todo;
    ``seconds`` a done step's duration, or how long the current one has run so far. A job without a
    timeline (not started yet, or recorded before there were timelines) shows its declared steps.
    """
    timeline = job.timeline
    if not timeline:
        state = "done" if job.status is JobStatus.COMPLETED else "todo"
        return [{"name": name, "state": state, "seconds": None, "started_at": None} for name in declared]
    now = now or utcnow()
    at = timeline.get("step")
    shown = []
    for index, step in enumerate(timeline["steps"]):
        seconds = step["seconds"]
        if job.status is JobStatus.COMPLETED or (at is not None and index < at):
            state = "done"
        elif index == at and job.is_terminal:
            state = "stopped"
        elif index == at:
            state = "current"
            started = parse_iso(step["started_at"])
            seconds = max(0, int((now - started).total_seconds())) if started else None
        else:
            state = "todo"
        shown.append({"name": step["name"], "state": state, "seconds": seconds, "started_at": step["started_at"]})
    return shown


def reached(job: Job) -> tuple[int, int, str] | None:
    """``(number from 1, how many, name)`` of the step ``job`` is in, or ended in; None before any."""
    timeline = job.timeline
    if not timeline or timeline.get("step") is None:
        return None
    index = timeline["step"]
    return index + 1, len(timeline["steps"]), timeline["steps"][index]["name"]


def step_time(seconds: float | None, running: bool = False) -> str:
    """A step's duration as a CI run page writes it: "0.7 s", "42 s", "1 min 05 s", "1 h 02 min" ("" for none).

    Rounded down, as ui.js's ``stepTime``; a running step's time so far counts whole seconds ("3 s"): it
    ticks once a second on the page.
    """
    if seconds is None:
        return ""
    if seconds < 10 and not running:
        return f"{math.floor(max(0.0, seconds) * 10) / 10:.1f} s"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
