"""A job's state as one value: what Redis holds, what the API sends, what an event carries."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_active(self) -> bool:
        return not self.is_terminal


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def utcnow() -> datetime:
    return datetime.now(UTC)


# The second of the last ``iso_now`` and its "YYYY-MM-DDTHH:MM:SS" (one tuple: threads read it whole).
_NOW_PREFIX: tuple[float, str] = (-1.0, "")


def iso_now(now: float | None = None) -> str:
    """``iso(utcnow())`` for the time ``now`` (``time.time()``), without a datetime: a job's pulse stamps
    every write with it. The date and time to the second are formatted once a second; the milliseconds are
    what ``iso`` gives (the microseconds rounded as ``datetime.fromtimestamp`` rounds them, then cut)."""
    global _NOW_PREFIX
    if now is None:
        now = time.time()
    fraction, whole = math.modf(now)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    second, prefix = _NOW_PREFIX
    if second != whole:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _NOW_PREFIX = (whole, prefix)
    return f"{prefix}.{micros // 1000:03d}Z"


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z``, to the millisecond, the one time format on the wire and in Redis."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def next_seq(previous: int) -> int:
    """The seq of a job's next state: larger than ``previous`` and than any seq written before now.

    Seq is a millisecond clock that never goes backwards for a job, so every writer (the runner, a
    reaper in another process, reconciliation from the database after Redis lost its data) makes a
    newer seq without asking the others, and clients order events by it alone.
    """
    return max(previous + 1, int(time.time() * 1000))


_INT_FIELDS = {"progress", "seq", "attempt"}
_BOOL_FIELDS = {"cancel_requested"}
_JSON_FIELDS = {"result", "attempts", "timeline", "estimate"}

RESUMED_MESSAGE = "Resumed after a server restart"
#: The error of a job whose run ended with its process (error code ``interrupted``), however it was found.
INTERRUPTED_MESSAGE = "The server running this job stopped before it finished. Retry it to run it again."


@dataclass
class Job:
    """The live state of one job. Field names are the Redis hash fields (see docs/operations.md)."""

    id: str
    job_type: str
    user_id: str
    title: str = ""
    status: JobStatus = JobStatus.PENDING
    progress: int = 0
    message: str = ""
    session_id: str | None = None
    seq: int = 0
    created_at: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    completed_at: str | None = None
    error_code: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    retry_of: str | None = None
    cancel_requested: bool = False
    # The run this state belongs to: 1, then one more each time another process resumes the job.
    attempt: int = 1
    # The earlier runs, oldest first: ``{"attempt", "started_at", "ended_at", "ended"}`` each.
    attempts: list[dict[str, Any]] | None = None
    # The declared steps of this run, each with its start and end (see steps.py), and the estimate of its
    # duration from earlier runs, read when it began.
    timeline: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def to_hash(self) -> tuple[dict[str, str], list[str]]:
        """Return ``(fields to write, fields to delete)`` for the job's Redis hash."""
        write: dict[str, str] = {}
        delete: list[str] = []
        for name in _HASH_FIELDS:
            value = getattr(self, name)
            if value is None:
                delete.append(name)
            elif name in _JSON_FIELDS:
                write[name] = json.dumps(value, separators=(",", ":"), default=str)
            elif name in _BOOL_FIELDS:
                # Set by others (a cancel request), never cleared by a live job's writes; the
                # store drops it at the terminal state.
                if value:
                    write[name] = "1"
            else:
                write[name] = str(value)
        return write, delete

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Job:
        kwargs: dict[str, Any] = {}
        for name in _HASH_FIELDS:
            if name not in data:
                continue
            raw = data[name]
            if name in _INT_FIELDS:
                kwargs[name] = int(raw)
            elif name in _BOOL_FIELDS:
                kwargs[name] = raw == "1"
            elif name in _JSON_FIELDS:
                kwargs[name] = json.loads(raw)
            elif name == "status":
                kwargs[name] = JobStatus(raw)
            else:
                kwargs[name] = raw
        kwargs.setdefault("id", data.get("id", ""))
        kwargs.setdefault("job_type", data.get("job_type", ""))
        kwargs.setdefault("user_id", data.get("user_id", ""))
        return cls(**kwargs)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """The job as the API and the event stream send it at ``now`` (an epoch; the clock's by default;
        ``result`` is the job's own dict, not a copy)."""
        # Field by field: dataclasses.asdict deep-copies, and this runs at every write of a job.
        data = {name: getattr(self, name) for name in _HASH_FIELDS}
        data["status"] = self.status.value
        data["terminal"] = self.is_terminal
        data.update(self.extra)
        data.update(sent_fields(self, now))
        return data

    def to_json(self, now: float | None = None) -> str:
        return json.dumps(self.to_dict(now), separators=(",", ":"), default=str)


_HASH_FIELDS = [f.name for f in fields(Job) if f.name != "extra"]


# -- what a job says of its time when it is sent (its timeline itself: steps.py) ----------------------------
def time_left(timeline: dict[str, Any] | None, estimate: dict[str, Any] | None, started_at: str | None,
              now: datetime) -> float | None:
    """Seconds probably left at ``now``: the medians of the steps ahead plus what is left of the running
    step's (when every one is known), else the median total less the time spent; never below 0."""
    plan = left_plan(timeline, estimate, started_at)
    return None if plan is None else plan_left(plan, now.timestamp())


class LeftPlan(NamedTuple):
    """How the time left moves with the clock until the job's timeline changes: ``budget`` seconds from
    ``since`` (an epoch; None: none spent yet), then ``after`` seconds more."""

    budget: float
    since: float | None
    after: float


def left_plan(timeline: dict[str, Any] | None, estimate: dict[str, Any] | None,
              started_at: str | None) -> LeftPlan | None:
    """``time_left``'s reading of the timeline and the estimate, for any ``now`` (None: no estimate)."""
    if not estimate:
        return None
    medians = estimate.get("steps") or []
    index = timeline.get("step") if timeline else None
    if timeline and medians and None not in medians and len(medians) == len(timeline["steps"]):
        if index is None:
            return LeftPlan(sum(medians), None, 0.0)
        return LeftPlan(medians[index], parse_epoch(timeline["steps"][index]["started_at"]), sum(medians[index + 1:]))
    return LeftPlan(estimate["seconds"], parse_epoch(started_at), 0.0)


def plan_left(plan: LeftPlan, now: float) -> float:
    """The seconds ``plan`` says are left at ``now`` (an epoch), to the millisecond."""
    spent = now - plan.since if plan.since is not None else 0.0
    return round(max(0.0, plan.budget - spent) + plan.after, 3)


def elapsed(started: float | None, now: float) -> float | None:
    """Seconds from ``started`` (an epoch) to ``now``, to the millisecond; None before the job started."""
    return round(max(0.0, now - started), 3) if started is not None else None


def parse_epoch(value: str | None) -> float | None:
    """An ISO time (``iso``) as an epoch; None for none."""
    parsed = parse_iso(value)
    return parsed.timestamp() if parsed else None


def sent_fields(job: Job, now: float | None = None) -> dict[str, Any]:
    """What the API and the events add to a job when they send it: ``elapsed`` and the estimate's ``left``
    (at ``now``, an epoch; the clock's by default)."""
    if now is None:
        now = time.time()
    end = parse_epoch(job.completed_at) if job.completed_at else now
    fields: dict[str, Any] = {"elapsed": elapsed(parse_epoch(job.started_at), end)}
    if job.estimate:
        plan = None if job.is_terminal else left_plan(job.timeline, job.estimate, job.started_at)
        fields["estimate"] = {**job.estimate, "left": None if plan is None else plan_left(plan, now)}
    return fields
