"""EPM program generation on fixed inputs: workstreams, CPM schedule, milestones, budget, load, risks."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from epm.errors import ValidationFailed
from epm.jobs.runner import JobCancelled
from epm.operations.canvas import build_canvas
from epm.operations.inputs import SessionBrief
from epm.operations.program import build_program, validate, workday, workdays_between
from epm.operations.workstreams import classify, count_in

MONDAY = date(2025, 3, 3)
MEAL_KITS = SessionBrief(
    id=1, name="Lyon meal kits",
    business="We run a subscription meal-kit service for busy families in Lyon, delivering fresh local "
             "ingredients every week.",
    objectives=("Launch in 3 new cities", "Build a mobile app for ordering", "Hire 5 delivery drivers",
                "Grow monthly revenue by 20%"),
    budget=Decimal("250000"), deadline=date(2025, 12, 19), team_size=6)


def build(brief: SessionBrief = MEAL_KITS, **kwargs) -> dict:
    return build_program(brief, start=MONDAY, **kwargs)


def tasks_by_id(program: dict) -> dict[str, dict]:
    return {task["id"]: task for task in program["tasks"]}


def risk_titles(program: dict) -> list[str]:
    return [risk["title"] for risk in program["risks"]]


def test_same_session_gives_the_same_program():
    canvas = build_canvas(MEAL_KITS)
    assert build(canvas=canvas) == build(canvas=canvas)


def test_workstreams_are_the_objectives_plus_pmo_governance_and_change():
    program = build()
    assert program["name"] == "Lyon meal kits \u2014 EPM program"
    assert [(w["key"], w["kind"]) for w in program["workstreams"]] == [
        ("pmo", "pmo"), ("obj1", "launch"), ("obj2", "digital"), ("obj3", "people"), ("obj4", "commercial"),
        ("governance", "governance"), ("change", "change")]
    assert [w["name"] for w in program["workstreams"][1:5]] == list(MEAL_KITS.objectives)
    assert program["inputs"]["objectives"] == list(MEAL_KITS.objectives)


def test_objectives_are_classified_by_their_words_and_counts_scale_the_work():
    assert [classify(o).key for o in ("Open 4 stores in Spain", "Migrate billing to the cloud",
                                      "Cut logistics costs by 10%", "Get ISO 9001 certified", "Celebrate")] == \
        ["launch", "digital", "efficiency", "compliance", "general"]
    assert (count_in("Launch in 3 new cities"), count_in("Hire five engineers"), count_in("Grow by 20%")) == (3, 5, 1)
    one_city = build(replace(MEAL_KITS, objectives=("Launch in 1 new city",)))
    three_cities = build(replace(MEAL_KITS, objectives=("Launch in 3 new cities",)))
    scale_up = [next(t["days"] for t in p["tasks"] if t["name"] == "Scale-up") for p in (one_city, three_cities)]
    assert scale_up == [15, 22]


def test_schedule_respects_every_dependency_and_its_critical_path_has_no_float():
    program = build(canvas=build_canvas(MEAL_KITS))
    tasks = tasks_by_id(program)
    for task in tasks.values():
        assert task["ef"] == task["es"] + task["days"]
        assert all(task["es"] >= tasks[dependency]["ef"] for dependency in task["depends_on"])
        assert task["total_float"] == task["ls"] - task["es"] >= 0
    path = program["schedule"]["critical_path"]
    assert path[0] == "T01" and tasks[path[-1]]["name"] == "Programme close-out"
    assert all(tasks[task_id]["critical"] for task_id in path)
    assert all(tasks[b]["es"] == tasks[a]["ef"] for a, b in zip(path, path[1:], strict=False))
    assert program["schedule"]["duration_days"] == max(task["ef"] for task in tasks.values())
    assert "Stage gate: designs approved" in program["schedule"]["critical_path_names"]


def test_tasks_are_dated_on_working_days():
    program = build_program(MEAL_KITS, start=date(2025, 3, 1))  # a Saturday: work starts on Monday
    first = program["tasks"][0]
    assert program["start"] == "2025-03-03"
    assert (first["start"], first["finish"]) == ("2025-03-03", "2025-03-07")  # 5 days, Monday to Friday
    assert program["tasks"][1]["start"] == "2025-03-10"
    assert workday(MONDAY, 7) == date(2025, 3, 12) and workdays_between(MONDAY, date(2025, 3, 14)) == 9
    assert all(date.fromisoformat(task["start"]).weekday() < 5 for task in program["tasks"])


def test_milestones_follow_their_tasks_in_date_order():
    program = build()
    tasks = tasks_by_id(program)
    names = [milestone["name"] for milestone in program["milestones"]]
    assert names[0] == "Programme mobilised" and names[-1] == "Programme closed"
    assert "Delivered: Launch in 3 new cities" in names and "Designs approved at the stage gate" in names
    for milestone in program["milestones"]:
        assert milestone["date"] == tasks[milestone["task"]]["finish"]
        assert milestone["day"] == tasks[milestone["task"]]["ef"] and not milestone["after_deadline"]
    assert [m["day"] for m in program["milestones"]] == sorted(m["day"] for m in program["milestones"])


def test_budget_is_split_across_workstreams_and_sums_exactly():
    budget = build(replace(MEAL_KITS, budget=Decimal("100000.01")))["budget"]
    amounts = [Decimal(a["amount"]) for a in budget["allocations"]]
    assert sum(amounts) + Decimal(budget["contingency"]) == Decimal("100000.01")
    assert budget["contingency"] == "10000.00"
    assert [a["workstream"] for a in budget["allocations"]] == ["pmo", "obj1", "obj2", "obj3", "obj4", "governance",
                                                                "change"]
    # In proportion to effort: the app build (3 people for 20 days) costs more than the PMO.
    by_key = {a["workstream"]: Decimal(a["amount"]) for a in budget["allocations"]}
    assert by_key["obj2"] > by_key["obj1"] > by_key["pmo"]


def test_program_without_budget_has_no_amounts_and_flags_it():
    program = build(replace(MEAL_KITS, budget=None))
    assert program["budget"]["total"] is None
    assert all(a["amount"] is None for a in program["budget"]["allocations"])
    assert "No budget approved" in risk_titles(program)


def test_resource_load_per_week_is_measured_against_the_team():
    program = build()
    weeks = program["resources"]["weeks"]
    # Week 1: only mobilisation (1 person, 5 days). Week 2 (days 5-9): baseline 5 days + steering committee
    # 3 + stakeholder analysis 4 + communication plan 1 = 13 person-days, 2.6 people on average.
    assert (weeks[0]["load"], weeks[1]["load"]) == (1.0, 2.6)
    assert (weeks[0]["start"], weeks[1]["start"]) == ("2025-03-03", "2025-03-10")
    assert len(weeks) == program["schedule"]["duration_weeks"]
    assert all(week["over"] == (week["load"] > 6) for week in weeks)
    assert program["resources"]["weeks_over_capacity"] == sum(week["over"] for week in weeks) > 0
    assert "Team over-allocated" in risk_titles(program)
    assert "Team over-allocated" not in risk_titles(build(replace(MEAL_KITS, team_size=40)))


def test_critical_path_past_the_deadline_is_the_top_risk():
    program = build(replace(MEAL_KITS, deadline=date(2025, 5, 1)))
    schedule = program["schedule"]
    assert schedule["deadline_met"] is False and schedule["slack_days"] < 0
    top = program["risks"][0]
    assert top["title"] == "Critical path runs past the deadline"
    assert (top["likelihood"], top["owner"], top["level"]) == (5, "pmo", "high")
    assert f"{-schedule['slack_days']} working days after the deadline of 2025-05-01" in top["description"]
    assert "Scale-up (22 days)" in top["mitigation"]
    assert program["milestones"][-1]["after_deadline"] and not program["milestones"][0]["after_deadline"]
    assert "past the deadline" in program["summary"]


def test_risk_register_is_scored_and_ranked():
    risks = build()["risks"]
    assert [risk["id"] for risk in risks] == [f"R{n:02d}" for n in range(1, len(risks) + 1)]
    assert [risk["score"] for risk in risks] == sorted((risk["score"] for risk in risks), reverse=True)
    for risk in risks:
        assert risk["score"] == risk["likelihood"] * risk["impact"]
        assert risk["level"] == ("high" if risk["score"] >= 15 else "medium" if risk["score"] >= 8 else "low")
        assert risk["mitigation"] and risk["owner_name"]
    assert "Hiring takes longer than planned: Hire 5 delivery drivers" in [risk["title"] for risk in risks]


def test_canvas_and_research_shape_the_program():
    canvas = build_canvas(MEAL_KITS)
    research = {"read": 2, "failed": 1, "key_terms": []}
    program = build(canvas=canvas, research=research)
    partner_task = next(t for t in program["tasks"] if t["name"].startswith("Agree terms with key partners"))
    assert "Delivery and logistics partners" in partner_task["name"]
    assert partner_task["id"] in next(t for t in program["tasks"] if t["name"].startswith("Stage gate"))["depends_on"]
    titles = risk_titles(program)
    assert "Incomplete evidence base" in titles and "Dependency on key partners" in titles
    assert "Plan not checked against outside evidence" in risk_titles(build())
    assert program["inputs"]["canvas"] and program["inputs"]["research"]


def test_session_without_objectives_plans_from_the_canvas_or_the_business():
    bare = replace(MEAL_KITS, objectives=())
    from_canvas = build(bare, canvas=build_canvas(bare))
    assert [w["name"] for w in from_canvas["workstreams"] if w["objective"]] == [
        "Subscriber retention and churn management", "Order fulfilment and last-mile delivery"]
    assert [w["name"] for w in build(bare)["workstreams"] if w["objective"]] == [
        "Deliver the subscription meal-kit service"]


def test_start_date_parameter_is_checked():
    assert validate({"start_date": "2025-04-01"}) == {"start_date": "2025-04-01"}
    assert validate({}) == {}
    with pytest.raises(ValidationFailed):
        validate({"start_date": "next tuesday"})


def test_generation_reports_its_stages_in_order_and_stops_where_a_stage_raises():
    seen: list[tuple[int, str]] = []

    def on_stage(percent: int, message: str) -> None:
        seen.append((percent, message))
        if message == "Splitting the budget across workstreams":
            raise JobCancelled()  # what the job's ctx.stage raises once the user cancels

    with pytest.raises(JobCancelled):
        build(on_stage=on_stage)
    assert [message for _, message in seen] == [
        "Deriving workstreams and tasks", "Computing the critical path", "Dating tasks and milestones",
        "Splitting the budget across workstreams"]
    assert [percent for percent, _ in seen] == sorted(percent for percent, _ in seen)
