"""EPM program generation on fixed inputs: workstreams, a CPM schedule sized to the deadline and the team,
milestones, budget, load, risks with role owners, and the research's facts as assumptions and evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from epm.errors import ValidationFailed
from epm.jobs.context import JobCancelled
from epm.operations.canvas import build_canvas
from epm.operations.inputs import SessionBrief
from epm.operations.program import build_program, validate, workday, workdays_between
from epm.operations.risks import ROLES
from epm.operations.sizing import buffer_days
from epm.operations.workstreams import classify, count_in
from tests.test_operations_canvas import MEAL_KITS, coffee_brief, coffee_research

MONDAY = date(2025, 3, 3)


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
    assert (count_in("Launch in 3 new cities"), count_in("Hire five engineers"), count_in("Grow by 20%"),
            count_in("Open 10 cafés in Denver")) == (3, 5, 1, 10)
    one_city = build(replace(MEAL_KITS, objectives=("Launch in 1 new city",), deadline=None))
    three_cities = build(replace(MEAL_KITS, objectives=("Launch in 3 new cities",), deadline=None))
    scale_up = [next(t for t in p["tasks"] if t["name"] == "Scale-up") for p in (one_city, three_cities)]
    assert [task["days"] for task in scale_up] == [15, 22]
    # Three cities are three times the scale-up work: more people, not only more days.
    assert [task["effort"] for task in scale_up] == [30.0, 90.0]


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
    program = build(replace(MEAL_KITS, budget=Decimal("100000.01")))
    budget = program["budget"]
    amounts = [Decimal(a["amount"]) for a in budget["allocations"]]
    assert sum(amounts) + Decimal(budget["contingency"]) == Decimal("100000.01")
    assert budget["contingency"] == "10000.00"
    assert [a["workstream"] for a in budget["allocations"]] == ["pmo", "obj1", "obj2", "obj3", "obj4", "governance",
                                                                "change"]
    # In proportion to effort: the more person-days a workstream takes, the more of the budget it gets.
    by_key = {a["workstream"]: Decimal(a["amount"]) for a in budget["allocations"]}
    effort = {w["key"]: w["effort_days"] for w in program["workstreams"]}
    assert sorted(by_key, key=by_key.get) == sorted(effort, key=effort.get)


def test_program_without_budget_has_no_amounts_and_flags_it():
    program = build(replace(MEAL_KITS, budget=None))
    assert program["budget"]["total"] is None
    assert all(a["amount"] is None for a in program["budget"]["allocations"])
    assert "No budget approved" in risk_titles(program)


def test_resource_load_per_week_is_measured_against_the_team():
    program = build()
    weeks = program["resources"]["weeks"]
    # Each week's load is the person-days of the tasks running in it, over five days.
    for week in weeks:
        first = (week["week"] - 1) * 5
        person_days = sum(task["fte"] for task in program["tasks"] for day in range(task["es"], task["ef"])
                          if first <= day < first + 5)
        assert week["load"] == round(person_days / 5, 1)
    assert weeks[0]["load"] == 1.0  # week 1: only mobilisation, one person
    assert (weeks[0]["start"], weeks[1]["start"]) == ("2025-03-03", "2025-03-10")
    assert len(weeks) == program["schedule"]["duration_weeks"]


@pytest.mark.parametrize("team_size", [2, 3, 6, 18])
def test_the_teams_load_stays_within_its_size(team_size):
    for brief in (replace(MEAL_KITS, team_size=team_size), replace(coffee_brief(), team_size=team_size)):
        program = build_program(brief, start=MONDAY)
        resources = program["resources"]
        assert resources["peak_load"] <= team_size, (brief.name, resources["peak_load"])
        assert resources["weeks_over_capacity"] == 0
        assert "Team over-allocated" not in risk_titles(program)


def test_duration_scales_with_the_time_to_the_deadline():
    """A year to the deadline gives a plan of about a year less the buffer, not fourteen weeks."""
    durations = {}
    for months, deadline in ((6, date(2025, 9, 1)), (12, date(2026, 3, 2)), (18, date(2026, 8, 31))):
        program = build(replace(MEAL_KITS, deadline=deadline, team_size=10))
        schedule = program["schedule"]
        available = workdays_between(MONDAY, deadline)
        assert schedule["available_days"] == available
        assert schedule["buffer_days"] == buffer_days(available) == max(10, round(available / 10))
        target = available - schedule["buffer_days"]
        assert target - 2 <= schedule["duration_days"] <= target
        assert schedule["deadline_met"] and schedule["slack_days"] >= schedule["buffer_days"]
        assert program["scope"]["fits"] and f"buffer of {schedule['slack_days']} working days" in \
            program["scope"]["statement"]
        durations[months] = schedule["duration_days"]
    assert durations[6] < durations[12] < durations[18]
    assert durations[12] > 200  # 260 working days to the deadline, less a 26-day buffer


def test_the_coffee_chain_plan_uses_its_twelve_months():
    program = build_program(coffee_brief(), start=date(2026, 12, 1), research=coffee_research())
    schedule = program["schedule"]
    assert schedule["deadline_met"] and schedule["slack_days"] >= schedule["buffer_days"] > 0
    assert schedule["duration_weeks"] >= 45  # not "14 weeks, 206 days to spare"
    assert program["resources"]["peak_load"] <= 18
    scale_up = next(t for t in program["tasks"] if t["name"] == "Scale-up")
    assert scale_up["effort"] == 300.0  # ten cafés: ten times one café's scale-up work


def test_scope_that_cannot_fit_says_so_and_what_to_cut():
    program = build(replace(MEAL_KITS, deadline=date(2025, 7, 15)))
    scope = program["scope"]
    assert not scope["fits"] and program["schedule"]["fits"] is False
    assert scope["statement"].startswith("The scope does not fit before the deadline")
    assert scope["cut"] and scope["cut"][0]["objective"] == "Launch in 3 new cities"
    assert scope["cut"][0]["text"] in scope["statement"]
    assert all(date.fromisoformat(option["finish"]) <= date(2025, 7, 15) for option in scope["cut"])
    assert "see what to cut" in program["summary"]
    # Far too little time: no single cut is enough, and the plan says what else to do.
    hopeless = build(replace(MEAL_KITS, deadline=date(2025, 4, 1)))["scope"]
    assert not hopeless["fits"] and hopeless["cut"] == [] and "move the deadline or add people" in \
        hopeless["statement"]


def test_critical_path_past_the_deadline_is_the_top_risk():
    program = build(replace(MEAL_KITS, deadline=date(2025, 5, 1)))
    schedule = program["schedule"]
    assert schedule["deadline_met"] is False and schedule["slack_days"] < 0
    top = program["risks"][0]
    assert top["title"] == "Critical path runs past the deadline"
    assert (top["likelihood"], top["owner"], top["level"]) == (5, "Programme manager", "high")
    assert f"{-schedule['slack_days']} working days after the deadline of 2025-05-01" in top["description"]
    scale_up = next(t for t in program["tasks"] if t["name"] == "Scale-up")
    assert f"Scale-up ({scale_up['days']} days)" in top["mitigation"]
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
    assert "Hiring takes longer than planned" in [risk["title"] for risk in risks]


def test_risk_owners_are_roles_and_titles_do_not_repeat_objectives():
    for brief in (MEAL_KITS, coffee_brief()):
        program = build_program(brief, start=MONDAY, research=coffee_research())
        for risk in program["risks"]:
            assert risk["owner"] in ROLES.values() and risk["owner_name"] == risk["owner"]
            assert not any(objective.lower() in risk["title"].lower() for objective in brief.objectives)
        assert len({risk["title"] for risk in program["risks"]}) == len(program["risks"])
    hires = next(r for r in build()["risks"] if r["title"] == "Hiring takes longer than planned")
    assert hires["owner"] == "HR lead" and "Hire 5 delivery drivers" in hires["description"]


def test_research_facts_become_assumptions_milestone_evidence_and_risk_evidence():
    program = build_program(coffee_brief(), start=date(2026, 12, 1), research=coffee_research())
    assumptions = program["assumptions"]
    assert assumptions and all(a["url"].startswith("https://research.example/") for a in assumptions)
    app = next(w for w in program["workstreams"] if w["objective"] == "Launch a mobile order-ahead app")
    assert any("31% of morning sales" in a["text"] for a in assumptions if a["workstream"] == app["key"])
    delivered = next(m for m in program["milestones"] if m["name"] == "Delivered: Launch a mobile order-ahead app")
    assert "app" in delivered["evidence"]["text"] and delivered["evidence"]["url"]
    cited = [risk for risk in program["risks"] if "evidence" in risk]
    assert len(cited) >= 2 and all("The research says:" in risk["description"] for risk in cited)
    assert program["inputs"]["facts_used"] >= 4


def test_canvas_and_research_shape_the_program():
    canvas = build_canvas(MEAL_KITS)
    research = {"read": 2, "failed": 1, "key_terms": []}
    program = build(canvas=canvas, research=research)
    partner_task = next(t for t in program["tasks"] if t["name"] == "Agree terms with key partners")
    assert partner_task["id"] in next(t for t in program["tasks"] if t["name"].startswith("Stage gate"))["depends_on"]
    titles = risk_titles(program)
    assert "Incomplete evidence base" in titles and "Dependency on key partners" in titles
    assert "Plan not checked against outside evidence" in risk_titles(build())
    assert program["inputs"]["canvas"] and program["inputs"]["research"]


def test_session_without_objectives_plans_from_the_canvas_or_the_business():
    bare = replace(MEAL_KITS, objectives=())
    from_canvas = build(bare, canvas=build_canvas(bare))
    assert [w["name"] for w in from_canvas["workstreams"] if w["objective"]] == [
        "The business keeps subscribers and works to reduce churn",
        "The business fulfils orders and delivers them to the door"]
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
        "Deriving workstreams and tasks", "Sizing the plan to the deadline and the team", "Dating tasks and milestones",
        "Splitting the budget across workstreams"]
    assert [percent for percent, _ in seen] == sorted(percent for percent, _ in seen)
