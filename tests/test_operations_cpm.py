"""The critical-path method and the budget split, against examples worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from epm.operations.budget import split_amount
from epm.operations.cpm import Activity, CycleError, ScheduleError, compute_schedule

# A -> B -> D -> F is the long chain (3 + 4 + 5 + 2 = 14 days); A -> C -> E -> F is 3 + 2 + 1 + 2 = 8.
#
#   forward pass:  A 0-3, B 3-7, C 3-5, D 7-12, E 5-6, F max(12, 6)=12-14
#   backward pass: F 12-14, D 7-12, E 11-12, B 3-7, C 9-11 (LF = LS of E), A 0-3 (LF = min(3, 9))
#   total float = LS - ES: A 0, B 0, C 6, D 0, E 6, F 0
#   free float = earliest ES of successors - EF: A 0, B 0, C 0 (E starts at 5), D 0, E 6 (F starts at 12), F 0
HAND_EXAMPLE = [
    Activity("A", 3),
    Activity("B", 4, ("A",)),
    Activity("C", 2, ("A",)),
    Activity("D", 5, ("B",)),
    Activity("E", 1, ("C",)),
    Activity("F", 2, ("D", "E")),
]
EXPECTED = {  # id: (ES, EF, LS, LF, total float, free float)
    "A": (0, 3, 0, 3, 0, 0),
    "B": (3, 7, 3, 7, 0, 0),
    "C": (3, 5, 9, 11, 6, 0),
    "D": (7, 12, 7, 12, 0, 0),
    "E": (5, 6, 11, 12, 6, 6),
    "F": (12, 14, 12, 14, 0, 0),
}


def test_schedule_matches_the_hand_computed_passes():
    schedule = compute_schedule(HAND_EXAMPLE)
    assert schedule.duration == 14
    for activity_id, (es, ef, ls, lf, total, free) in EXPECTED.items():
        timing = schedule[activity_id]
        assert (timing.es, timing.ef, timing.ls, timing.lf, timing.total_float, timing.free_float) == \
            (es, ef, ls, lf, total, free), activity_id


def test_critical_path_is_the_zero_float_chain():
    schedule = compute_schedule(HAND_EXAMPLE)
    assert schedule.critical_path == ("A", "B", "D", "F")
    assert {a.id for a in schedule.activities if a.critical} == {"A", "B", "D", "F"}


def test_activities_come_back_after_everything_they_depend_on():
    schedule = compute_schedule(list(reversed(HAND_EXAMPLE)))
    order = [activity.id for activity in schedule.activities]
    for activity in schedule.activities:
        assert all(order.index(dependency) < order.index(activity.id) for dependency in activity.depends_on)
    assert schedule["F"].es == 12 and schedule.duration == 14


def test_parallel_starts_and_a_zero_day_milestone():
    # X (2 days) and Y (5 days) both start on day 0; Z waits for both; M marks Z's end.
    schedule = compute_schedule([Activity("X", 2), Activity("Y", 5), Activity("Z", 1, ("X", "Y")),
                                 Activity("M", 0, ("Z",))])
    assert (schedule["X"].total_float, schedule["Y"].total_float) == (3, 0)
    assert (schedule["Z"].es, schedule["Z"].ef) == (5, 6)
    assert (schedule["M"].es, schedule["M"].ef, schedule["M"].critical) == (6, 6, True)
    assert schedule.critical_path == ("Y", "Z", "M")


def test_dependency_cycle_is_reported_with_the_tasks_in_the_loop():
    with pytest.raises(CycleError) as caught:
        compute_schedule([Activity("start", 1), Activity("A", 2, ("start", "C")), Activity("B", 2, ("A",)),
                          Activity("C", 2, ("B",)), Activity("after", 1, ("start",))])
    assert caught.value.cycle == ["A", "B", "C", "A"]
    assert "loop: A -> B -> C -> A" in str(caught.value)


def test_task_depending_on_itself_is_a_cycle():
    with pytest.raises(CycleError) as caught:
        compute_schedule([Activity("A", 1, ("A",))])
    assert caught.value.cycle == ["A", "A"]


@pytest.mark.parametrize(("activities", "message"), [
    ([Activity("A", 1, ("missing",))], "depends on 'missing', which does not exist"),
    ([Activity("A", 1), Activity("A", 2)], "Two tasks have the id 'A'"),
    ([Activity("A", -1)], "negative duration"),
])
def test_unschedulable_input_is_refused_with_a_reason(activities, message):
    with pytest.raises(ScheduleError, match=message):
        compute_schedule(activities)


def test_no_activities_make_an_empty_schedule():
    schedule = compute_schedule([])
    assert schedule.duration == 0 and schedule.critical_path == () and schedule.activities == ()


def test_budget_split_gives_leftover_cents_to_the_largest_remainders():
    parts = split_amount(Decimal("1000.00"), {"a": 1, "b": 1, "c": 1})
    assert parts == {"a": Decimal("333.34"), "b": Decimal("333.33"), "c": Decimal("333.33")}
    parts = split_amount(Decimal("100"), {"small": 1, "large": 2})
    assert parts == {"small": Decimal("33.33"), "large": Decimal("66.67")}


@pytest.mark.parametrize("total", ["0.05", "1", "999.99", "250000", "1234567.89", "0"])
def test_budget_split_sums_exactly_to_the_total(total):
    weights = {"pmo": 10, "obj1": 37.5, "obj2": 64, "governance": 9, "change": 13.3, "reserve": 1 / 3}
    parts = split_amount(Decimal(total), weights)
    assert sum(parts.values()) == Decimal(total)
    assert all(part >= 0 and part == part.quantize(Decimal("0.01")) for part in parts.values())
    assert list(parts) == list(weights)


def test_budget_split_refuses_negative_totals_and_empty_weights():
    with pytest.raises(ValueError):
        split_amount(Decimal("-1"), {"a": 1})
    with pytest.raises(ValueError):
        split_amount(Decimal("10"), {"a": 0})
    with pytest.raises(ValueError):
        split_amount(Decimal("10"), {})
