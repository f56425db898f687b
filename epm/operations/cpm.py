"""The critical-path method: earliest and latest start and finish, float, and the critical path.

Durations are whole working days; an activity starts on the day its last predecessor finishes
(finish-to-start), so day numbers are offsets from the start of the programme.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class ScheduleError(ValueError):
    """The activities cannot be scheduled; the message says why, in words a user can read."""


class CycleError(ScheduleError):
    """Activities depend on each other in a loop; ``cycle`` names them, the first repeated at the end."""

    def __init__(self, cycle: list[str]):
        super().__init__("These tasks depend on each other in a loop: " + " -> ".join(cycle) + ".")
        self.cycle = cycle


@dataclass(frozen=True)
class Activity:
    """Something to schedule: its id, duration in days, and the ids it cannot start before."""

    id: str
    duration: int
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduledActivity:
    """An activity with its earliest/latest start and finish, total and free float."""

    id: str
    duration: int
    depends_on: tuple[str, ...]
    es: int
    ef: int
    ls: int
    lf: int
    total_float: int
    free_float: int

    @property
    def critical(self) -> bool:
        return self.total_float == 0


@dataclass(frozen=True)
class Schedule:
    """The activities in dependency order, the programme's duration and one critical path."""

    activities: tuple[ScheduledActivity, ...]
    duration: int
    critical_path: tuple[str, ...]

    def __getitem__(self, activity_id: str) -> ScheduledActivity:
        for activity in self.activities:
            if activity.id == activity_id:
                return activity
        raise KeyError(activity_id)


def compute_schedule(activities: Iterable[Activity]) -> Schedule:
    """Run the forward and backward passes over ``activities``.

    Raises ``ScheduleError`` for a duplicate id, a negative duration or an unknown dependency, and
    ``CycleError`` when dependencies loop. Ties are broken by the order given, so equal input always
    gives the same schedule.
    """
    given = list(activities)
    by_id = _index(given)
    order = _topological_order(given, by_id)
    successors: dict[str, list[str]] = {activity.id: [] for activity in given}
    for activity in given:
        for dependency in dict.fromkeys(activity.depends_on):
            successors[dependency].append(activity.id)

    es: dict[str, int] = {}
    ef: dict[str, int] = {}
    for activity_id in order:
        activity = by_id[activity_id]
        es[activity_id] = max((ef[dependency] for dependency in activity.depends_on), default=0)
        ef[activity_id] = es[activity_id] + activity.duration
    duration = max(ef.values(), default=0)

    ls: dict[str, int] = {}
    lf: dict[str, int] = {}
    for activity_id in reversed(order):
        lf[activity_id] = min((ls[successor] for successor in successors[activity_id]), default=duration)
        ls[activity_id] = lf[activity_id] - by_id[activity_id].duration

    scheduled = tuple(
        ScheduledActivity(id=activity_id, duration=by_id[activity_id].duration,
                          depends_on=tuple(by_id[activity_id].depends_on), es=es[activity_id], ef=ef[activity_id],
                          ls=ls[activity_id], lf=lf[activity_id], total_float=ls[activity_id] - es[activity_id],
                          free_float=min((es[successor] for successor in successors[activity_id]),
                                         default=duration) - ef[activity_id])
        for activity_id in order)
    return Schedule(activities=scheduled, duration=duration,
                    critical_path=_critical_path(scheduled, successors, duration))


def _index(activities: list[Activity]) -> dict[str, Activity]:
    by_id: dict[str, Activity] = {}
    for activity in activities:
        if activity.id in by_id:
            raise ScheduleError(f"Two tasks have the id {activity.id!r}.")
        if activity.duration < 0:
            raise ScheduleError(f"Task {activity.id!r} has a negative duration ({activity.duration}).")
        by_id[activity.id] = activity
    for activity in activities:
        for dependency in activity.depends_on:
            if dependency not in by_id:
                raise ScheduleError(f"Task {activity.id!r} depends on {dependency!r}, which does not exist.")
    return by_id


def _topological_order(activities: list[Activity], by_id: dict[str, Activity]) -> list[str]:
    """Activities with each after all it depends on (input order among equals), or ``CycleError``."""
    position = {activity.id: index for index, activity in enumerate(activities)}
    order: list[str] = []
    done: set[str] = set()
    remaining = [activity.id for activity in activities]
    while remaining:
        ready = [activity_id for activity_id in remaining
                 if all(dependency in done for dependency in by_id[activity_id].depends_on)]
        if not ready:
            raise CycleError(_find_cycle(remaining, by_id, position))
        order.extend(ready)
        done.update(ready)
        remaining = [activity_id for activity_id in remaining if activity_id not in done]
    return order


def _find_cycle(remaining: list[str], by_id: dict[str, Activity], position: dict[str, int]) -> list[str]:
    """One loop among ``remaining`` (each waits on another of them), in dependency order, from the earliest given."""
    pending = set(remaining)
    path: list[str] = []
    seen: dict[str, int] = {}
    current = remaining[0]
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        waiting_on = sorted((dependency for dependency in by_id[current].depends_on if dependency in pending),
                            key=position.__getitem__)
        current = waiting_on[0]
    loop = path[seen[current]:]
    # Each activity of ``loop`` depends on the next one; read forwards, "A -> B" means B needs A first.
    loop.reverse()
    first = min(range(len(loop)), key=lambda index: position[loop[index]])
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]


def _critical_path(scheduled: tuple[ScheduledActivity, ...], successors: dict[str, list[str]],
                   duration: int) -> tuple[str, ...]:
    """The first chain of critical activities from day 0 to the end, following the input's order."""
    by_id = {activity.id: activity for activity in scheduled}
    current = next((activity for activity in scheduled if activity.critical and activity.es == 0), None)
    path: list[str] = []
    while current is not None:
        path.append(current.id)
        if current.ef == duration and not any(by_id[successor].critical and by_id[successor].es == current.ef
                                              for successor in successors[current.id]):
            break
        current = next((by_id[successor] for successor in successors[current.id]
                        if by_id[successor].critical and by_id[successor].es == current.ef), None)
    return tuple(path)
