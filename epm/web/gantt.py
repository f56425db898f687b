"""The geometry of a program's Gantt chart: where each bar, diamond and tick goes in the SVG.

Laid out on the working-day axis the schedule was computed on (``es``/``ef`` offsets), so the chart
shows exactly the critical-path method's answer; the template draws what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LABEL_WIDTH = 260
CHART_WIDTH = 660
ROW = 24
BAR = 14
TOP = 28
MILESTONE_ROW = 30


@dataclass
class Bar:
    task_id: str
    label: str
    x: float
    width: float
    y: float
    critical: bool
    title: str


@dataclass
class Diamond:
    x: float
    y: float
    title: str
    critical: bool


@dataclass
class Tick:
    x: float
    label: str


@dataclass
class Gantt:
    width: int
    height: int
    label_width: int
    axis_y: float
    bars: list[Bar] = field(default_factory=list)
    diamonds: list[Diamond] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    deadline_x: float | None = None
    milestone_y: float = 0
    row_height: int = ROW
    bar_height: int = BAR


def layout(program: dict[str, Any]) -> Gantt:
    """Bars in workstream order, one row per task; a row of milestone diamonds below; week ticks."""
    tasks = _ordered_tasks(program)
    duration = max([int(program.get("schedule", {}).get("duration_days") or 0)]
                   + [int(task.get("ef") or 0) for task in tasks] + [1])
    scale = CHART_WIDTH / duration
    height = TOP + ROW * len(tasks) + MILESTONE_ROW + 8
    chart = Gantt(width=LABEL_WIDTH + CHART_WIDTH + 16, height=height, label_width=LABEL_WIDTH, axis_y=TOP - 8)
    names = {w["key"]: w["name"] for w in program.get("workstreams", [])}
    for row, task in enumerate(tasks):
        es, ef = int(task.get("es") or 0), int(task.get("ef") or 0)
        critical = bool(task.get("critical"))
        days = int(task.get("days") or 0)
        title = (f"{task['name']} ({names.get(task.get('workstream'), task.get('workstream', ''))}): "
                 f"{task.get('start')} to {task.get('finish')}, {days} working day{'s' if days != 1 else ''}, "
                 + ("on the critical path" if critical else f"{task.get('total_float', 0)} days of float"))
        chart.bars.append(Bar(task_id=task["id"], label=task["name"], x=LABEL_WIDTH + es * scale,
                              width=max((ef - es) * scale, 3), y=TOP + row * ROW + (ROW - BAR) / 2,
                              critical=critical, title=title))
    chart.milestone_y = TOP + ROW * len(tasks) + MILESTONE_ROW / 2
    for milestone in program.get("milestones", []):
        day = int(milestone.get("day") or 0)
        chart.diamonds.append(Diamond(x=LABEL_WIDTH + day * scale, y=chart.milestone_y,
                                      critical=bool(milestone.get("critical")),
                                      title=f"{milestone['name']}: {milestone.get('date')}"
                                            + (" (critical)" if milestone.get("critical") else "")
                                            + (" — after the deadline" if milestone.get("after_deadline") else "")))
    step = 5 if duration <= 130 else 10 if duration <= 260 else 20
    for day in range(0, duration + 1, step):
        chart.ticks.append(Tick(x=LABEL_WIDTH + day * scale, label=f"W{day // 5 + 1}" if day < duration else ""))
    slack = program.get("schedule", {}).get("slack_days")
    if isinstance(slack, int) and 0 <= duration + slack <= duration * 1.5:
        chart.deadline_x = LABEL_WIDTH + (duration + slack) * scale
        chart.width = max(chart.width, int(chart.deadline_x) + 60)
    return chart


def _ordered_tasks(program: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks grouped by workstream (in the program's order), each group by early start."""
    order = {w["key"]: i for i, w in enumerate(program.get("workstreams", []))}
    return sorted(program.get("tasks", []),
                  key=lambda t: (order.get(t.get("workstream"), len(order)), t.get("es") or 0, t["id"]))
