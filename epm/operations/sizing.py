"""Sizing a plan to its goal: the pace that uses the time to the deadline, within the team's size.

Each task has an *effort* (person-days, from the kind of work and the size of the objective: ten
cafés are more work than one) and a nominal duration. The pace stretches or compresses every
task's duration by one factor; the people on a task are its effort over its duration, so a longer
plan needs fewer people at once. The pace chosen is the slowest that still finishes a stated
buffer before the deadline, then slowed further only if the team would be over-allocated. When
even the fastest credible pace (fast-tracking by ``FASTEST``) misses the deadline, the plan says
so and names which objectives to cut or defer so that the rest fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cpm import Activity, Schedule, compute_schedule

WEEK = 5
BUFFER = 0.10          # share of the time to the deadline kept free for the unexpected
MIN_BUFFER_DAYS = 10   # at least two working weeks
FASTEST = 0.75         # durations can be cut by a quarter by adding people, no more
SLOWEST = 12.0         # no task is stretched beyond twelve times its nominal length
_STEPS = 30


@dataclass(frozen=True)
class Sizing:
    """The chosen pace and what it gives: the tasks with their days and people, and the schedule."""

    pace: float
    tasks: list[dict[str, Any]]
    schedule: Schedule
    available_days: int | None
    buffer_days: int | None
    target_days: int | None
    peak_load: float
    fits: bool
    reason: str | None


def paced(tasks: list[dict[str, Any]], pace: float, team_size: int | None) -> list[dict[str, Any]]:
    """``tasks`` at ``pace``: fixed tasks keep their days; others scale, their people are effort over days."""
    result = []
    for task in tasks:
        days = task["days"] if task.get("fixed") else max(1, round(task["nominal_days"] * pace))
        fte = round(task["effort"] / days, 2) if days else 0.0
        if team_size:
            fte = min(fte, float(team_size))
        result.append({**task, "days": days, "fte": fte})
    return result


def weekly_load(tasks: list[dict[str, Any]], schedule: Schedule) -> list[float]:
    """People needed each week, tasks at their earliest dates."""
    weeks = -(-schedule.duration // WEEK)
    person_days = [0.0] * max(weeks, 1)
    for task in tasks:
        timing = schedule[task["id"]]
        for day in range(timing.es, timing.ef):
            person_days[day // WEEK] += task["fte"]
    return [round(load / WEEK, 1) for load in person_days]


def _schedule(tasks: list[dict[str, Any]], run: Callable[..., Any]) -> Schedule:
    return run(compute_schedule, [Activity(task["id"], task["days"], tuple(task["depends_on"])) for task in tasks])


def buffer_days(available: int) -> int:
    """The buffer kept before the deadline: a tenth of the time, at least two weeks, never all of it."""
    return min(max(MIN_BUFFER_DAYS, round(available * BUFFER)), max(available - 1, 0))


def size(tasks: list[dict[str, Any]], *, available: int | None, team_size: int | None,
         run: Callable[..., Any]) -> Sizing:
    """The pace for ``tasks`` given ``available`` working days to the deadline (None: no deadline)."""
    def at(pace: float) -> tuple[list[dict[str, Any]], Schedule, float]:
        current = paced(tasks, pace, team_size)
        schedule = _schedule(current, run)
        return current, schedule, max(weekly_load(current, schedule))

    if available is None:
        current, schedule, peak = at(1.0)
        pace, fits, reason = 1.0, True, None
        buffer = target = None
    else:
        buffer = buffer_days(available)
        target = available - buffer
        pace = _slowest_within(lambda p: at(p)[1].duration <= target)
        fits = pace is not None
        reason = None if fits else "time"
        pace = pace if pace is not None else 1.0
        current, schedule, peak = at(pace)
    if team_size and peak > team_size:
        pace = _fastest_within(lambda p: at(p)[2] <= team_size, pace)
        current, schedule, peak = at(pace)
        if target is not None and schedule.duration > target:
            fits, reason = False, reason or "team"
    return Sizing(pace=round(pace, 3), tasks=current, schedule=schedule, available_days=available,
                  buffer_days=buffer, target_days=target, peak_load=peak, fits=fits, reason=reason)


def _slowest_within(ok: Callable[[float], bool]) -> float | None:
    """The largest pace in [FASTEST, SLOWEST] for which ``ok`` holds (it holds below some pace), else None."""
    if not ok(FASTEST):
        return None
    if ok(SLOWEST):
        return SLOWEST
    low, high = FASTEST, SLOWEST
    for _ in range(_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low


def _fastest_within(ok: Callable[[float], bool], start: float) -> float:
    """The first pace from ``start`` up, in 5% steps, for which ``ok`` holds (at most ``SLOWEST``)."""
    pace = start
    while pace < SLOWEST and not ok(pace):
        pace *= 1.05
    return min(pace, SLOWEST)
