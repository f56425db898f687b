"""The geometry of a program's Gantt chart: rows grouped by workstream, bars, diamonds and lines.

Laid out on the working-day axis the schedule was computed on (``es``/``ef`` offsets), so the chart
shows exactly the critical-path method's answer. Horizontal positions are percentages of the chart's
width, so the server-rendered SVG fills whatever width its card has, and the rows (fixed pixel
heights) line up with the fixed label column beside it. The template draws what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ..operations.program import workdays_between

LABEL_WIDTH = 250
ROW = 26
GROUP_ROW = 30
BAR = 14
TOP = 30
BOTTOM = 8
LABEL_CHARS = 31


@dataclass
class Row:
    """One line of the chart: a workstream's header, or one of its tasks."""

    kind: str  # "group" or "task"
    y: float
    height: int
    label: str
    workstream: str
    task_id: str | None = None
    short_label: str = ""
    x: float = 0.0       # percent
    width: float = 0.0   # percent
    critical: bool = False
    title: str = ""
    start: str = ""
    finish: str = ""


@dataclass
class Diamond:
    x: float  # percent
    y: float
    title: str
    critical: bool


@dataclass
class Line:
    x: float  # percent
    label: str
    date: str


@dataclass
class Tick:
    x: float  # percent
    label: str


@dataclass
class Phase:
    """A workstream as the phone shows it: name, dates and tasks; or a today/deadline marker."""

    kind: str  # "phase", "today" or "deadline"
    name: str
    start: str
    finish: str = ""
    critical: bool = False
    tasks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Gantt:
    height: int
    label_width: int
    rows: list[Row] = field(default_factory=list)
    diamonds: list[Diamond] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    today: Line | None = None
    deadline: Line | None = None
    phases: list[Phase] = field(default_factory=list)
    bar_height: int = BAR
    top: int = TOP

    @property
    def bars(self) -> list[Row]:
        return [row for row in self.rows if row.kind == "task"]


def layout(program: dict[str, Any], today: date | None = None) -> Gantt:
    """The chart of ``program`` as seen on ``today`` (the today line is drawn when it falls on the axis)."""
    groups = _groups(program)
    tasks = [task for _, own in groups for task in own]
    duration = max([int(program.get("schedule", {}).get("duration_days") or 0)]
                   + [int(task.get("ef") or 0) for task in tasks] + [1])
    slack = program.get("schedule", {}).get("slack_days")
    deadline_day = duration + slack if isinstance(slack, int) else None
    start = _date(program.get("start"))
    today_day = _offset(start, today) if start and today else None
    span = max([duration] + [day for day in (deadline_day, today_day) if day is not None and day >= 0]) * 1.02

    def pct(day: float) -> float:
        return round(100 * day / span, 3)

    chart = Gantt(height=0, label_width=LABEL_WIDTH)
    y = float(TOP)
    critical_milestones = {m.get("task"): m for m in program.get("milestones", [])}
    for workstream, own in groups:
        chart.rows.append(Row(kind="group", y=y, height=GROUP_ROW, label=workstream["name"],
                              workstream=workstream["key"], short_label=_short(workstream["name"], LABEL_CHARS - 4),
                              start=own[0].get("start", ""), finish=max(t.get("finish", "") for t in own)))
        y += GROUP_ROW
        for task in own:
            es, ef = int(task.get("es") or 0), int(task.get("ef") or 0)
            critical = bool(task.get("critical"))
            days = int(task.get("days") or 0)
            title = (f"{task['name']} ({workstream['name']}): {task.get('start')} to {task.get('finish')}, "
                     f"{days} working day{'s' if days != 1 else ''}, "
                     + ("on the critical path" if critical else f"{task.get('total_float', 0)} days of float"))
            row = Row(kind="task", y=y, height=ROW, label=task["name"], workstream=workstream["key"],
                      task_id=task["id"], short_label=_short(task["name"], LABEL_CHARS), x=pct(es),
                      width=max(pct(ef - es), 0.4), critical=critical, title=title,
                      start=task.get("start", ""), finish=task.get("finish", ""))
            chart.rows.append(row)
            milestone = critical_milestones.get(task["id"])
            if milestone:
                chart.diamonds.append(Diamond(
                    x=pct(int(milestone.get("day") or ef)), y=y + ROW / 2, critical=bool(milestone.get("critical")),
                    title=f"Milestone: {milestone['name']}, {milestone.get('date')}"
                          + (" (after the deadline)" if milestone.get("after_deadline") else "")))
            y += ROW
    chart.height = int(y + BOTTOM)
    chart.ticks = _month_ticks(start, span, pct) if start else []
    if deadline_day is not None and program.get("deadline"):
        chart.deadline = Line(x=pct(deadline_day), label="Deadline", date=program["deadline"])
    if today_day is not None and 0 <= today_day <= span and today:
        chart.today = Line(x=pct(today_day), label="Today", date=today.isoformat())
    chart.phases = _phases(groups, program, today)
    return chart


def _groups(program: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Workstreams with their tasks by start, the workstreams by their first task's start."""
    order = {w["key"]: i for i, w in enumerate(program.get("workstreams", []))}
    groups = []
    for workstream in program.get("workstreams", []):
        own = sorted((t for t in program.get("tasks", []) if t.get("workstream") == workstream["key"]),
                     key=lambda t: (t.get("es") or 0, t.get("ef") or 0, t["id"]))
        if own:
            groups.append((workstream, own))
    known = set(order)
    stray = [t for t in program.get("tasks", []) if t.get("workstream") not in known]
    if stray:
        groups.append(({"key": "other", "name": "Other tasks"},
                       sorted(stray, key=lambda t: (t.get("es") or 0, t["id"]))))
    return sorted(groups, key=lambda group: (group[1][0].get("es") or 0, order.get(group[0]["key"], len(order))))


def _phases(groups: list[tuple[dict[str, Any], list[dict[str, Any]]]], program: dict[str, Any],
            today: date | None) -> list[Phase]:
    phases = [Phase(kind="phase", name=workstream["name"], start=own[0].get("start", ""),
                    finish=max(t.get("finish", "") for t in own), critical=any(t.get("critical") for t in own),
                    tasks=own) for workstream, own in groups]
    marks = []
    if today:
        marks.append(Phase(kind="today", name="Today", start=today.isoformat()))
    if program.get("deadline"):
        marks.append(Phase(kind="deadline", name="Deadline", start=program["deadline"]))
    # Markers go before the first phase that starts after them, so the list reads in date order.
    return sorted(phases + marks, key=lambda phase: (phase.start, phase.kind != "today", phase.kind == "deadline"))


def _month_ticks(start: date, span: float, pct: Any) -> list[Tick]:
    """A tick at the first working day of each month (each quarter on long plans)."""
    months = int(span / 21) + 2
    step = 1 if months <= 15 else 3 if months <= 40 else 6
    ticks = []
    month = date(start.year, start.month, 1)
    while True:
        if month >= start and (month.month - 1) % step == 0:
            day = _offset(start, month)
            if day > span:
                break
            ticks.append(Tick(x=pct(day), label=month.strftime("%b %Y") if month.month == 1 or not ticks
                              else month.strftime("%b")))
        month = (month + timedelta(days=32)).replace(day=1)
        if _offset(start, month) > span:
            break
    return ticks


def _offset(start: date, day: date) -> int:
    """Working days from ``start`` to ``day`` (negative before it)."""
    return workdays_between(start, day)


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _short(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - 1].rstrip() + "…"
