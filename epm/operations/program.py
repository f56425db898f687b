"""``epm_generation``: an EPM program for a session, from its objectives, canvas and research.

The program holds workstreams and tasks, a schedule by the critical-path method, milestones, the
budget split across workstreams, the team's load week by week and a risk register. ``build_program``
is a pure function of its inputs (the same session and start date give the same program); the
registered operation only loads the inputs, reports the stages and saves the result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..errors import ValidationFailed
from ..extensions import db
from ..jobs.registry import operation
from ..jobs.runner import JobContext, OperationError
from ..models import Program
from .budget import split_amount
from .cpm import Activity, Schedule, ScheduleError, compute_schedule
from .inputs import SessionBrief, latest_analysis, load_session
from .risks import assess_risks
from .workstreams import plan_work

CONTINGENCY = Fraction(1, 10)
WEEK = 5

Stage = Callable[[int, str], None]
Runner = Callable[..., Any]


def _no_stage(percent: int, message: str) -> None:
    return None


def _run_here(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def build_program(brief: SessionBrief, *, start: date, canvas: dict[str, Any] | None = None,
                  research: dict[str, Any] | None = None, on_stage: Stage = _no_stage,
                  run: Runner = _run_here) -> dict[str, Any]:
    """The program for ``brief`` starting on ``start`` (moved to a Monday if it is a weekend).

    ``on_stage(percent, message)`` is told as each stage begins; ``run(fn, *args)`` runs the heavy
    computation (the critical-path method). Raises ``ScheduleError`` if the tasks cannot be scheduled.
    """
    start = _next_workday(start)
    on_stage(10, "Deriving workstreams and tasks")
    plan = plan_work(brief, canvas)
    on_stage(25, "Computing the critical path")
    schedule: Schedule = run(compute_schedule, [Activity(task["id"], task["days"], tuple(task["depends_on"]))
                                                for task in plan["tasks"]])
    on_stage(40, "Dating tasks and milestones")
    program: dict[str, Any] = {"name": program_name(brief), "session": {"id": brief.id, "name": brief.name},
                               "start": start.isoformat(),
                               "deadline": brief.deadline.isoformat() if brief.deadline else None}
    program["tasks"] = _dated_tasks(plan["tasks"], schedule, start)
    program["schedule"] = _schedule_summary(schedule, program["tasks"], start, brief.deadline)
    program["milestones"] = _milestones(plan["milestones"], program["tasks"], brief.deadline)
    program["workstreams"] = _workstreams(plan["workstreams"], program["tasks"])
    on_stage(55, "Splitting the budget across workstreams")
    program["budget"] = _budget(brief.budget, program["workstreams"])
    on_stage(70, "Loading the team week by week")
    program["resources"] = _resources(program["tasks"], schedule.duration, start, brief.team_size)
    on_stage(80, "Assessing risks")
    program["risks"] = assess_risks(program, research=research, canvas=canvas)
    program["inputs"] = {"objectives": [workstream["objective"] for workstream in program["workstreams"]
                                        if workstream["objective"]],
                         "canvas": canvas is not None, "research": research is not None}
    program["summary"] = _summary(program)
    return program


def program_name(brief: SessionBrief) -> str:
    return f"{brief.name} \u2014 EPM program"[:200]


def workday(start: date, offset: int) -> date:
    """The date ``offset`` working days (Monday to Friday) after ``start``, itself a working day."""
    weeks, days = divmod(offset, WEEK)
    day = start + timedelta(weeks=weeks)
    for _ in range(days):
        day = _next_workday(day + timedelta(days=1))
    return day


def workdays_between(first: date, last: date) -> int:
    """Working days after ``first`` up to and including ``last`` (negative when ``last`` is earlier)."""
    if last < first:
        return -workdays_between(last, first)
    return sum(1 for n in range(1, (last - first).days + 1) if (first + timedelta(days=n)).weekday() < 5)


def _next_workday(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _dated_tasks(tasks: list[dict[str, Any]], schedule: Schedule, start: date) -> list[dict[str, Any]]:
    dated = []
    for task in tasks:
        timing = schedule[task["id"]]
        dated.append({**task, "es": timing.es, "ef": timing.ef, "ls": timing.ls, "lf": timing.lf,
                      "total_float": timing.total_float, "free_float": timing.free_float,
                      "critical": timing.critical, "start": workday(start, timing.es).isoformat(),
                      "finish": workday(start, max(timing.ef - 1, timing.es)).isoformat()})
    return dated


def _schedule_summary(schedule: Schedule, tasks: list[dict[str, Any]], start: date,
                      deadline: date | None) -> dict[str, Any]:
    finish = workday(start, max(schedule.duration - 1, 0))
    names = {task["id"]: task["name"] for task in tasks}
    slack = workdays_between(finish, deadline) if deadline else None
    return {"duration_days": schedule.duration, "duration_weeks": -(-schedule.duration // WEEK),
            "finish": finish.isoformat(), "critical_path": list(schedule.critical_path),
            "critical_path_names": [names[task_id] for task_id in schedule.critical_path],
            "deadline_met": None if deadline is None else finish <= deadline, "slack_days": slack}


def _milestones(marks: list[tuple[str, str, str]], tasks: list[dict[str, Any]],
                deadline: date | None) -> list[dict[str, Any]]:
    by_id = {task["id"]: task for task in tasks}
    milestones = []
    for name, task_id, workstream in marks:
        task = by_id[task_id]
        milestones.append({"name": name, "task": task_id, "workstream": workstream, "day": task["ef"],
                           "date": task["finish"], "critical": task["critical"],
                           "after_deadline": bool(deadline and date.fromisoformat(task["finish"]) > deadline)})
    return sorted(milestones, key=lambda milestone: milestone["day"])


def _workstreams(workstreams: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for workstream in workstreams:
        own = [task for task in tasks if task["workstream"] == workstream["key"]]
        result.append({**workstream, "task_ids": [task["id"] for task in own],
                       "effort_days": _round(sum(task["days"] * task["fte"] for task in own)),
                       "start": min(task["start"] for task in own), "finish": max(task["finish"] for task in own),
                       "critical": any(task["critical"] for task in own)})
    return result


def _budget(total: Decimal | None, workstreams: list[dict[str, Any]]) -> dict[str, Any]:
    """The budget by workstream in proportion to effort, with a contingency reserve; amounts as strings."""
    effort = {workstream["key"]: Fraction(str(workstream["effort_days"])) for workstream in workstreams}
    effort_days = _round(float(sum(effort.values())))
    names = {workstream["key"]: workstream["name"] for workstream in workstreams}
    if total is None:
        return {"total": None, "contingency": None, "effort_days": effort_days, "per_person_day": None,
                "allocations": [{"workstream": key, "name": names[key], "amount": None, "share": None}
                                for key in effort]}
    weights = {**effort, "contingency": sum(effort.values()) * CONTINGENCY / (1 - CONTINGENCY)}
    parts = split_amount(total, weights)
    contingency = parts.pop("contingency")
    per_day = ((total - contingency) / Decimal(str(effort_days))).quantize(Decimal("0.01")) if effort_days else total
    return {"total": str(total.quantize(Decimal("0.01"))), "contingency": str(contingency), "effort_days": effort_days,
            "per_person_day": str(per_day),
            "allocations": [{"workstream": key, "name": names[key], "amount": str(amount),
                             "share": float(round(amount / total * 100, 1)) if total else 0.0}
                            for key, amount in parts.items()]}


def _resources(tasks: list[dict[str, Any]], duration: int, start: date, team_size: int | None) -> dict[str, Any]:
    """Average people needed each week (tasks at their earliest dates) against the team size."""
    weeks = -(-duration // WEEK)
    person_days = [0.0] * weeks
    for task in tasks:
        for day in range(task["es"], task["ef"]):
            person_days[day // WEEK] += task["fte"]
    rows = []
    for number, load in enumerate(person_days):
        load = _round(load / WEEK)
        rows.append({"week": number + 1, "start": workday(start, number * WEEK).isoformat(), "load": load,
                     "capacity": team_size, "over": team_size is not None and load > team_size})
    return {"team_size": team_size, "weeks": rows, "peak_load": max((row["load"] for row in rows), default=0.0),
            "weeks_over_capacity": sum(row["over"] for row in rows)}


def _summary(program: dict[str, Any]) -> str:
    schedule = program["schedule"]
    objectives = sum(1 for workstream in program["workstreams"] if workstream["objective"])
    text = (f"{len(program['workstreams'])} workstreams ({objectives} from objectives), {len(program['tasks'])} "
            f"tasks over {schedule['duration_days']} working days, finishing {schedule['finish']}")
    if schedule["deadline_met"] is False:
        text += f", {-schedule['slack_days']} working days past the deadline"
    high = sum(1 for risk in program["risks"] if risk["level"] == "high")
    return text + f"; {len(program['risks'])} risks ({high} high)."


def _round(value: float) -> float:
    return round(value, 1)


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Accept an optional ``start_date`` (YYYY-MM-DD) for the program; today is the default."""
    clean: dict[str, Any] = {}
    if params.get("start_date"):
        try:
            clean["start_date"] = date.fromisoformat(str(params["start_date"])).isoformat()
        except ValueError:
            raise ValidationFailed("start_date must be a date like 2025-03-31.",
                                   {"start_date": "not a date"}) from None
    return clean


@operation("epm_generation", title="EPM generation", ready="EPM program ready", view_label="View program",
           validate=validate, steps=("Reading the session, canvas and research", "Deriving workstreams and tasks",
                                     "Computing the critical path", "Dating tasks and milestones",
                                     "Splitting the budget across workstreams", "Loading the team week by week",
                                     "Assessing risks", "Saving the program"))
def generate_program(ctx: JobContext) -> dict[str, Any]:
    """Builds an EPM program: workstreams, critical-path schedule, milestones, budget, resources and risks."""
    ctx.stage(0, "Reading the session, canvas and research")
    session = load_session(ctx)
    brief = SessionBrief.from_session(session)
    canvas_row = latest_analysis(session, "bmc")
    research_row = latest_analysis(session, "research")
    start = (date.fromisoformat(ctx.params["start_date"]) if ctx.params.get("start_date")
             else datetime.now(UTC).date())
    try:
        data = build_program(brief, start=start, canvas=canvas_row.data if canvas_row else None,
                             research=research_row.data if research_row else None, on_stage=ctx.stage,
                             run=ctx.run_blocking)
    except ScheduleError as exc:
        raise OperationError(f"The program could not be scheduled: {exc}", code="schedule_invalid") from None
    data["sources"] = {"canvas_analysis_id": canvas_row.id if canvas_row else None,
                       "research_analysis_id": research_row.id if research_row else None}
    ctx.stage(95, "Saving the program")
    program = Program(user_id=session.user_id, session_id=session.id, job_id=ctx.job_id, name=data["name"], data=data)
    db.session.add(program)
    db.session.commit()
    return {"url": f"/programs/{program.id}", "summary": data["summary"], "program_id": program.id,
            "session_id": session.id}
