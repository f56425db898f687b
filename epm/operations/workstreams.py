"""Workstreams and their tasks: one workstream per objective, plus programme management, governance
and change management, with durations, staffing and the dependencies between them.

An objective's tasks follow the steps of the kind of work it names ("launch in 3 new cities" is a
go-to-market objective; "hire 5 engineers" a people one), scaled by the count it mentions. The
standard streams tie the objectives together: mobilisation before any of them, one design stage
gate before any build, change and benefits reviews after delivery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import text
from .inputs import SessionBrief
from .text import short_name

MAX_OBJECTIVES = 8


@dataclass(frozen=True)
class Step:
    """One step of a kind of work: its name, working days and people (full-time equivalents)."""

    name: str
    days: int
    fte: float


@dataclass(frozen=True)
class WorkKind:
    """A kind of objective, recognised by its keywords, delivered in its steps.

    ``scaled`` is the step that grows with a count in the objective (3 cities, 5 engineers).
    """

    key: str
    label: str
    keywords: frozenset[str]
    steps: tuple[Step, ...]
    scaled: int


def _kind(key: str, label: str, keywords: str, steps: list[tuple[str, int, float]], scaled: int) -> WorkKind:
    return WorkKind(key, label, frozenset(keywords.split()), tuple(Step(*step) for step in steps), scaled)


WORK_KINDS = (
    _kind("launch", "Go-to-market", "launch open expand enter market markets city cities country countries region "
          "regions store stores location locations international", [
              ("Market and site analysis", 6, 1), ("Offer and pricing design", 8, 1), ("Launch readiness", 10, 2),
              ("Pilot launch", 10, 2), ("Scale-up", 15, 2)], 4),
    _kind("digital", "Technology", "build develop platform app apps mobile order-ahead software system systems "
          "digital automate website online data integrate integration migrate migration cloud portal tool tools ai", [
              ("Requirements and user research", 6, 1), ("Solution design", 8, 2), ("Build", 20, 3),
              ("Testing and hardening", 8, 2), ("Release", 4, 2)], 2),
    _kind("people", "People", "hire hiring recruit staff team teams train training skills talent culture "
          "onboard onboarding engineers employees people", [
              ("Role and capability plan", 4, 1), ("Design the hiring and training approach", 4, 1),
              ("Recruitment campaign", 20, 1), ("Onboarding", 8, 1), ("Training programme", 10, 1)], 2),
    _kind("efficiency", "Operational excellence", "reduce cut cost costs efficiency efficient optimise optimize "
          "process processes lean waste streamline margin margins productivity", [
              ("Baseline measurement", 5, 1), ("Root-cause analysis", 7, 1), ("Process redesign", 10, 2),
              ("Implementation", 15, 2), ("Benefits measurement", 5, 1)], 3),
    _kind("commercial", "Commercial", "revenue sales sell grow growth wholesale customer customers partnership "
          "partnerships retention subscribers pricing marketing brand share", [
              ("Customer and market insight", 6, 1), ("Proposition and campaign design", 8, 1),
              ("Sales enablement", 10, 2), ("Campaign execution", 15, 2), ("Results review", 4, 1)], 3),
    _kind("compliance", "Compliance", "comply compliance regulation regulations regulatory certification "
          "certified iso gdpr audit safety security accreditation", [
              ("Gap assessment", 6, 1), ("Control design", 8, 1), ("Implementation of controls", 12, 2),
              ("Internal audit", 5, 1), ("Certification", 5, 1)], 2),
)
GENERAL = _kind("general", "Delivery", "", [("Analysis", 5, 1), ("Planning", 5, 1), ("Execution", 15, 2),
                                           ("Acceptance", 3, 1), ("Handover", 4, 1)], 2)

# "3 new cities", "5 engineers", "two regions": a count of things, which scales the work.
_COUNT = re.compile(r"\b(\d{1,3}|two|three|four|five|six|seven|eight|nine|ten)\s+(?:new\s+|more\s+|additional\s+)?"
                    r"[^\W\d_][\w-]*s\b", re.IGNORECASE)
_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def classify(objective: str) -> WorkKind:
    """The kind of work an objective names: the kind with most keyword hits (the first on a tie)."""
    tokens = text.words(objective)
    hits = [(sum(token in kind.keywords for token in tokens), -index, kind) for index, kind in enumerate(WORK_KINDS)]
    best = max(hits, key=lambda hit: hit[:2])
    return best[2] if best[0] else GENERAL


def count_in(objective: str) -> int:
    """The count of things an objective mentions (``3`` in "open 3 new stores"), 1 when none."""
    match = _COUNT.search(objective)
    if not match:
        return 1
    raw = match.group(1).lower()
    return max(1, int(raw) if raw.isdigit() else _NUMBER_WORDS[raw])


def objectives_of(brief: SessionBrief, canvas: dict[str, Any] | None = None) -> list[str]:
    """The objectives to plan for: the session's own, else the canvas's key activities, else the business."""
    if brief.objectives:
        return list(brief.objectives[:MAX_OBJECTIVES])
    if canvas:
        activities = next((block["items"] for block in canvas.get("blocks", []) if block["key"] == "key_activities"),
                          [])
        if activities:
            return [item["text"] for item in activities[:3]]
    return [f"Deliver the {brief.offering}" if brief.business else f"Deliver {brief.name}"]


class _Plan:
    """Collects workstreams and tasks, numbering tasks T01, T02, ... in the order they are added."""

    def __init__(self) -> None:
        self.workstreams: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []

    def workstream(self, key: str, name: str, kind: str, objective: str | None = None) -> str:
        self.workstreams.append({"key": key, "name": name, "kind": kind, "objective": objective})
        return key

    def task(self, workstream: str, name: str, days: int, fte: float, depends_on: list[str], *,
             fixed: bool = False, effort: float | None = None) -> str:
        """Add a task of ``days`` at ``fte`` people (``effort`` person-days when the size adds people).

        A ``fixed`` task (a meeting, a gate) keeps its length whatever the plan's pace.
        """
        task_id = f"T{len(self.tasks) + 1:02d}"
        self.tasks.append({"id": task_id, "name": name, "workstream": workstream, "days": days, "fte": fte,
                           "nominal_days": days, "effort": round(effort if effort is not None else days * fte, 1),
                           "fixed": fixed, "depends_on": list(dict.fromkeys(depends_on))})
        return task_id

    def depend(self, task_id: str, on: str) -> None:
        task = next(task for task in self.tasks if task["id"] == task_id)
        task["depends_on"].append(on)


def plan_work(brief: SessionBrief, canvas: dict[str, Any] | None = None) -> dict[str, Any]:
    """Workstreams and tasks (with days, FTE and dependencies) for the session's objectives.

    Returns ``{"workstreams": [...], "tasks": [...], "milestones": [(name, task id, workstream)]}``.
    """
    plan = _Plan()
    milestones: list[tuple[str, str, str]] = []
    pmo = plan.workstream("pmo", "Programme management (PMO)", "pmo")
    mobilise = plan.task(pmo, "Mobilise the programme team", 5, 1, [], fixed=True)
    baseline = plan.task(pmo, "Programme plan and baseline", 5, 1, [mobilise], fixed=True)
    milestones.append(("Programme mobilised", baseline, pmo))

    governance = "governance"
    change = "change"
    objective_steps: list[list[str]] = []
    for number, objective in enumerate(objectives_of(brief, canvas), start=1):
        kind = classify(objective)
        key = plan.workstream(f"obj{number}", short_name(objective), kind.key, objective)
        count = min(count_in(objective), 10)
        ids: list[str] = []
        for index, step in enumerate(kind.steps):
            # The scaled step's effort grows with the count (ten cafés, ten times the work) and the other
            # steps' with its square root (ten sites to analyse, not ten analyses); lengths grow more slowly,
            # because the units run in parallel with more people.
            days = round(step.days * (1 + 0.25 * (count - 1))) if index == kind.scaled else step.days
            effort = step.days * step.fte * (count if index == kind.scaled else count ** 0.5)
            ids.append(plan.task(key, step.name, days, step.fte, [ids[-1]] if ids else [baseline], effort=effort))
        objective_steps.append(ids)
        milestones.append((f"Delivered: {short_name(objective, 50)}", ids[-1], key))

    plan.workstream(governance, "Governance", "governance")
    steering = plan.task(governance, "Steering committee and decision rights", 3, 1, [mobilise], fixed=True)
    gate_inputs = [steering] + [ids[1] for ids in objective_steps]
    partners = _key_partners(canvas)
    if partners:
        gate_inputs.append(plan.task(governance, "Agree terms with key partners", 8, 1, [steering]))
    gate = plan.task(governance, "Stage gate: designs approved", 1, 1, gate_inputs, fixed=True)
    milestones.append(("Designs approved at the stage gate", gate, governance))
    for ids in objective_steps:
        plan.depend(ids[2], on=gate)
    benefits = plan.task(governance, "Benefits review", 2, 1, [ids[-1] for ids in objective_steps])

    plan.workstream(change, "Change management", "change")
    stakeholders = plan.task(change, "Stakeholder analysis", 4, 1, [mobilise])
    communication = plan.task(change, "Communication and engagement plan", 5, 1, [stakeholders])
    training = plan.task(change, "Training and adoption support", 8, 1, [communication] + [ids[-2] for ids in
                                                                                          objective_steps])
    adoption = plan.task(change, "Adoption review", 3, 1, [training] + [ids[-1] for ids in objective_steps])

    close = plan.task(pmo, "Programme close-out", 3, 1, [benefits, adoption], fixed=True)
    milestones.append(("Programme closed", close, pmo))
    return {"workstreams": plan.workstreams, "tasks": plan.tasks, "milestones": milestones}


def _key_partners(canvas: dict[str, Any] | None) -> list[str]:
    if not canvas:
        return []
    items = next((block["items"] for block in canvas.get("blocks", []) if block["key"] == "key_partners"), [])
    return [short_name(item["text"], 40) for item in items[:2]]
