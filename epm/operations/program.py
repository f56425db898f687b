"""``epm_generation``: an EPM program for a session, from its objectives, canvas and research.

The program holds workstreams and tasks, a schedule by the critical-path method sized to the time
to the deadline and the team (``sizing.py``), milestones, the budget split across workstreams, the
team's load week by week, the assumptions the research supports and a risk register. When the scope
cannot fit, ``scope`` says so and what to cut. ``build_program`` is a pure function of its inputs
(the same session and start date give the same program); the registered operation loads the inputs
as plain data, reports the stages and saves the result as the session's next version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select

from ..errors import ValidationFailed
from ..extensions import db
from ..jobs import JobContext, OperationError, operation
from ..models import Program
from . import facts
from .budget import split_amount
from .cpm import Schedule, ScheduleError
from .inputs import SessionBrief, load_inputs, save_row, saved_earlier
from .risks import assess_risks
from .sizing import Sizing, size, weekly_load
from .workstreams import objectives_of, plan_work

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
    on_stage(25, "Sizing the plan to the deadline and the team")
    available = workdays_between(start, brief.deadline) if brief.deadline else None
    # One hop to the thread pool for the whole search (dozens of critical-path passes), not one per pass.
    sizing = run(size, plan["tasks"], available=available, team_size=brief.team_size, run=_run_here)
    schedule: Schedule = sizing.schedule
    on_stage(40, "Dating tasks and milestones")
    evidence = list((research or {}).get("facts", []))
    program: dict[str, Any] = {"name": program_name(brief), "session": {"id": brief.id, "name": brief.name},
                               "start": start.isoformat(),
                               "deadline": brief.deadline.isoformat() if brief.deadline else None}
    program["tasks"] = _dated_tasks(sizing.tasks, schedule, start)
    program["schedule"] = _schedule_summary(schedule, program["tasks"], start, brief.deadline)
    program["schedule"].update(_sizing_summary(sizing))
    program["milestones"] = _milestones(plan["milestones"], program["tasks"], brief.deadline)
    program["workstreams"] = _workstreams(plan["workstreams"], program["tasks"])
    _cite_milestones(program["milestones"], program["workstreams"], evidence)
    program["scope"] = run(_scope, brief, canvas, sizing, start)
    on_stage(55, "Splitting the budget across workstreams")
    program["budget"] = _budget(brief.budget, program["workstreams"])
    on_stage(70, "Loading the team week by week")
    program["resources"] = _resources(sizing.tasks, schedule, start, brief.team_size)
    on_stage(80, "Assessing risks")
    program["assumptions"] = _assumptions(program["workstreams"], evidence)
    program["risks"] = assess_risks(program, research=research, canvas=canvas)
    program["inputs"] = {"objectives": [workstream["objective"] for workstream in program["workstreams"]
                                        if workstream["objective"]],
                         "canvas": canvas is not None, "research": research is not None,
                         "facts_used": len({a["text"] for a in program["assumptions"]})}
    program["summary"] = _summary(program)
    return program


def _sizing_summary(sizing: Sizing) -> dict[str, Any]:
    return {"pace": sizing.pace, "available_days": sizing.available_days, "buffer_days": sizing.buffer_days,
            "target_days": sizing.target_days, "fits": sizing.fits}


def _scope(brief: SessionBrief, canvas: dict[str, Any] | None, sizing: Sizing, start: date) -> dict[str, Any]:
    """Whether the objectives fit before the deadline with the team; if not, which to cut or defer.

    Each objective is tried out of the plan in turn; those whose removal lets the rest fit are
    suggested, the one that saves most time first.
    """
    if sizing.fits:
        if sizing.available_days is None:
            return {"fits": True, "statement": "No deadline is set, so the plan runs at its nominal pace.",
                    "cut": []}
        slack = workdays_between(workday(start, max(sizing.schedule.duration - 1, 0)), brief.deadline) \
            if brief.deadline else sizing.buffer_days
        return {"fits": True, "cut": [],
                "statement": f"The scope fits: the plan keeps a buffer of {slack} working days "
                             f"(about {-(-slack // WEEK)} weeks) before the deadline, and at most "
                             f"{sizing.peak_load} of the {brief.team_size or 'unknown number of'} people are "
                             "busy at once."}
    why = ("the critical path is longer than the time to the deadline, even fast-tracked"
           if sizing.reason == "time" else f"the team of {brief.team_size} cannot carry the work in that time")
    objectives = objectives_of(brief, canvas)
    cut = []
    for objective in objectives if len(objectives) > 1 else []:
        rest = replace(brief, objectives=tuple(o for o in objectives if o != objective))
        trial = size(plan_work(rest, None)["tasks"], available=sizing.available_days, team_size=brief.team_size,
                     run=_run_here)
        if trial.fits:
            finish = workday(start, max(trial.schedule.duration - 1, 0))
            cut.append({"objective": objective, "finish": finish.isoformat(), "days": trial.schedule.duration,
                        "text": f"Defer “{objective}” to a second phase: the rest then finishes on "
                                f"{finish.isoformat()}, inside the deadline with its buffer."})
    cut.sort(key=lambda option: option["days"])
    statement = f"The scope does not fit before the deadline: {why}."
    if cut:
        statement += " " + cut[0]["text"]
    else:
        statement += " No single objective's removal makes it fit: move the deadline or add people."
    return {"fits": False, "statement": statement, "cut": cut}


def _assumptions(workstreams: list[dict[str, Any]], evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The research facts each objective's plan rests on, with their sources."""
    assumptions = []
    for workstream in workstreams:
        if workstream["objective"]:
            for fact in facts.relevant(evidence, workstream["objective"], limit=2):
                assumptions.append({"workstream": workstream["key"], "workstream_name": workstream["name"],
                                    "text": fact["text"], "url": fact.get("url"),
                                    "source": fact.get("source") or fact.get("url")})
    return assumptions


def _cite_milestones(milestones: list[dict[str, Any]], workstreams: list[dict[str, Any]],
                     evidence: list[dict[str, Any]]) -> None:
    """Give each objective's delivery milestone the research fact that bears most on it."""
    objectives = {workstream["key"]: workstream["objective"] for workstream in workstreams}
    for milestone in milestones:
        objective = objectives.get(milestone["workstream"])
        found = facts.relevant(evidence, objective, limit=1) if objective else []
        if found:
            milestone["evidence"] = {"text": found[0]["text"], "url": found[0].get("url"),
                                     "source": found[0].get("source") or found[0].get("url")}


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


def _resources(tasks: list[dict[str, Any]], schedule: Schedule, start: date,
               team_size: int | None) -> dict[str, Any]:
    """Average people needed each week (tasks at their earliest dates) against the team size."""
    rows = []
    for number, load in enumerate(weekly_load(tasks, schedule)):
        rows.append({"week": number + 1, "start": workday(start, number * WEEK).isoformat(), "load": load,
                     "capacity": team_size, "over": team_size is not None and load > team_size})
    return {"team_size": team_size, "weeks": rows, "peak_load": max((row["load"] for row in rows), default=0.0),
            "weeks_over_capacity": sum(row["over"] for row in rows)}


def _summary(program: dict[str, Any]) -> str:
    schedule = program["schedule"]
    objectives = sum(1 for workstream in program["workstreams"] if workstream["objective"])
    text = (f"{len(program['workstreams'])} workstreams ({objectives} from objectives), {len(program['tasks'])} "
            f"tasks over {schedule['duration_days']} working days ({schedule['duration_weeks']} weeks), finishing "
            f"{schedule['finish']}")
    if schedule["deadline_met"] is False:
        text += f", {-schedule['slack_days']} working days past the deadline"
    elif schedule["deadline_met"]:
        text += f" with a buffer of {schedule['slack_days']} working days before the deadline"
    high = sum(1 for risk in program["risks"] if risk["level"] == "high")
    text += f"; {len(program['risks'])} risks ({high} high)."
    if not program["scope"]["fits"]:
        text += " The scope does not fit: see what to cut."
    return text


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
           validate=validate, resumable=True, heading="EPM program", start_label="Generate EPM program",
           steps=("Reading the session, canvas and research", "Deriving workstreams and tasks",
                  "Sizing the plan to the deadline and the team", "Dating tasks and milestones",
                  "Splitting the budget across workstreams", "Loading the team week by week", "Assessing risks",
                  "Saving the program"))
def generate_program(ctx: JobContext) -> dict[str, Any]:
    """Builds an EPM program: workstreams, critical-path schedule, milestones, budget, resources and risks."""
    ctx.stage(0, "Reading the session, canvas and research")
    inputs = load_inputs(ctx, "bmc", "research")
    brief = inputs.brief
    start = (date.fromisoformat(ctx.params["start_date"]) if ctx.params.get("start_date")
             else datetime.now(UTC).date())
    try:
        data = build_program(brief, start=start, canvas=inputs.data("bmc"), research=inputs.data("research"),
                             on_stage=ctx.stage, run=ctx.run_blocking)
    except ScheduleError as exc:
        raise OperationError(f"The program could not be scheduled: {exc}", code="schedule_invalid") from None
    data["sources"] = {"canvas_analysis_id": inputs.analysis_id("bmc"),
                       "research_analysis_id": inputs.analysis_id("research")}
    ctx.stage(95, "Saving the program")
    earlier = saved_earlier(ctx, Program)  # a resumed job whose earlier attempt saved it already
    program_id, version = ((earlier.id, earlier.version) if earlier is not None
                           else save_program(inputs.user_id, brief.id, ctx.job_id, data))
    return {"url": f"/programs/{program_id}", "summary": data["summary"],
            "program_id": program_id, "session_id": brief.id, "version": version}


def save_program(user_id: int, session_id: int, job_id: str | None, data: dict[str, Any]) -> tuple[int, int]:
    """Save ``data`` as the session's next program version, in one short transaction; (id, version)."""
    latest = db.session.scalar(select(func.max(Program.version)).where(Program.session_id == session_id,
                                                                        Program.user_id == user_id))
    version = (latest or 0) + 1
    program = Program(user_id=user_id, session_id=session_id, job_id=job_id, name=data["name"], data=data,
                      version=version)
    return save_row(program), version
