"""The risk register of a program: what the schedule, staffing, budget and kinds of work put at risk.

Each risk has a likelihood and an impact (1-5), their product as its score, a mitigation, the
workstream it concerns and an owner: a role (the programme manager, the sponsor, the lead of a kind
of work), never an objective. Risks come from the program's own numbers (a critical path past the
deadline, weeks where the team is over-allocated, budget per person-day) and from the research's
facts (cited with their source), so they are specific to the session rather than a generic list.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from . import facts

# Below this budget per person-day of planned effort, the budget is unlikely to cover the work.
LOW_DAY_RATE = Decimal(250)

_KIND_RISKS = {
    "launch": ("Market adoption slower than planned", 3, 4,
               "Pilot in one location first and agree go/no-go criteria before the scale-up."),
    "digital": ("Technical delivery overruns", 3, 4,
                "Time-box the build, release in increments and start testing in the first iteration."),
    "people": ("Hiring takes longer than planned", 4, 3,
               "Start recruiting at once, use specialist agencies and plan interim contractors."),
    "efficiency": ("Savings not realised", 3, 3,
                   "Measure the baseline first, name an owner for each saving and track it monthly."),
    "commercial": ("Customer demand below target", 3, 4,
                   "Test the proposition with customers before committing the full campaign spend."),
    "compliance": ("Audit findings delay certification", 2, 5,
                   "Run a pre-audit against the standard and close gaps before the formal audit."),
    "general": ("Scope grows during delivery", 3, 3,
                "Agree scope and acceptance criteria at the start; route changes through the steering committee."),
}


# Who owns a risk, by the kind of workstream it concerns.
ROLES = {"pmo": "Programme manager", "governance": "Programme sponsor", "change": "Change manager",
         "launch": "Expansion lead", "digital": "Head of digital product", "people": "HR lead",
         "efficiency": "Operations director", "commercial": "Commercial director", "compliance": "Compliance officer",
         "general": "Delivery lead"}


def level(score: int) -> str:
    return "high" if score >= 15 else "medium" if score >= 8 else "low"


def assess_risks(program: dict[str, Any], *, research: dict[str, Any] | None = None,
                 canvas: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The risk register of ``program`` (its schedule, resources, budget and workstreams), highest score first."""
    names = {workstream["key"]: workstream["name"] for workstream in program["workstreams"]}
    kinds = {workstream["key"]: workstream["kind"] for workstream in program["workstreams"]}
    found = [*_schedule_risks(program), *_resource_risks(program), *_budget_risks(program),
             *_workstream_risks(program, research), *_evidence_risks(research, canvas)]
    ranked = sorted(enumerate(found), key=lambda item: (-item[1][1] * item[1][2], item[0]))
    register = []
    for number, (_, (title, likelihood, impact, description, mitigation, workstream, *cited)) in enumerate(
            ranked, start=1):
        score = likelihood * impact
        role = ROLES.get(kinds.get(workstream, workstream), "Programme manager")
        risk = {"id": f"R{number:02d}", "title": title, "description": description, "likelihood": likelihood,
                "impact": impact, "score": score, "level": level(score), "mitigation": mitigation,
                "workstream": workstream, "workstream_name": names.get(workstream, workstream),
                "owner": role, "owner_name": role}
        if cited and cited[0]:
            risk["evidence"] = cited[0]
        register.append(risk)
    return register


def _schedule_risks(program: dict[str, Any]) -> list[tuple]:
    schedule = program["schedule"]
    tasks = {task["id"]: task for task in program["tasks"]}
    critical = sorted((tasks[task_id] for task_id in schedule["critical_path"]), key=lambda task: -task["days"])
    longest = ", ".join(f"{task['name']} ({task['days']} days)" for task in critical[:3])
    if program["deadline"] is None:
        return [("No deadline agreed", 2, 3,
                 f"The plan takes {schedule['duration_days']} working days, but the session sets no deadline "
                 "to hold it to.", "Agree a target date with the sponsor and baseline the plan against it.",
                 "governance")]
    slack = schedule["slack_days"]
    if slack < 0:
        overrun = -slack
        impact = 5 if overrun * 5 > schedule["duration_days"] else 4
        return [("Critical path runs past the deadline", 5, impact,
                 f"The critical path takes {schedule['duration_days']} working days and ends on "
                 f"{schedule['finish']}, {overrun} working days after the deadline of {program['deadline']}.",
                 f"Re-scope or fast-track the longest critical tasks ({longest}), add people to them, "
                 "or agree a later deadline.", "pmo")]
    if slack * 10 < schedule["duration_days"]:
        return [("Little slack before the deadline", 3, 4,
                 f"The plan ends on {schedule['finish']}, {slack} working days before the deadline of "
                 f"{program['deadline']}; any delay on the critical path misses it.",
                 f"Watch the critical tasks ({longest}) weekly and keep a fast-track option ready.", "pmo")]
    return []


def _resource_risks(program: dict[str, Any]) -> list[tuple]:
    resources = program["resources"]
    if resources["team_size"] is None:
        return [("Team size unknown", 3, 3,
                 f"The plan needs up to {resources['peak_load']} people at once, but the session does not say "
                 "how many are available.", "Confirm who is assigned to the programme and for how much of their "
                 "time.", "pmo")]
    over = resources["weeks_over_capacity"]
    if not over:
        return []
    weeks = len(resources["weeks"])
    likelihood = 5 if over * 2 >= weeks else 4 if over * 4 >= weeks else 3
    impact = 4 if resources["peak_load"] > 1.5 * resources["team_size"] else 3
    return [("Team over-allocated", likelihood, impact,
             f"In {over} of {weeks} weeks the plan needs more than the team of {resources['team_size']} "
             f"(peak {resources['peak_load']} people).",
             "Stagger parallel work using the float of non-critical tasks, or add people for the peak weeks.", "pmo")]


def _budget_risks(program: dict[str, Any]) -> list[tuple]:
    budget = program["budget"]
    if budget["total"] is None:
        return [("No budget approved", 4, 4,
                 f"The plan needs about {budget['effort_days']} person-days of work, but the session has no budget.",
                 "Ask the sponsor to approve a budget based on the workstream estimates.", "governance")]
    rate = Decimal(budget["per_person_day"])
    if rate < LOW_DAY_RATE:
        return [("Budget may not cover the planned effort", 4, 4,
                 f"The budget allows about {rate} per person-day over {budget['effort_days']} person-days of work.",
                 "Re-estimate with the workstream leads, cut scope, or ask for more budget before starting.",
                 "governance")]
    return []


def _workstream_risks(program: dict[str, Any], research: dict[str, Any] | None) -> list[tuple]:
    critical = {task["workstream"] for task in program["tasks"] if task["critical"]}
    evidence = (research or {}).get("facts", [])
    risks = []
    objective_streams = [workstream for workstream in program["workstreams"] if workstream["objective"]]
    seen: dict[str, int] = {}
    for workstream in objective_streams:
        title, likelihood, impact, mitigation = _KIND_RISKS[workstream["kind"]]
        seen[title] = seen.get(title, 0) + 1
        if seen[title] > 1:
            title = f"{title} ({seen[title]})"
        description = f"This threatens the objective \u201c{workstream['objective']}\u201d."
        if workstream["key"] in critical:
            likelihood = min(5, likelihood + 1)
            description += " It is on the critical path, so a delay here delays the whole program."
        cited = facts.relevant(evidence, workstream["objective"], limit=1)
        source = None
        if cited:
            source = {"text": cited[0]["text"], "url": cited[0].get("url"),
                      "source": cited[0].get("source") or cited[0].get("url")}
            description += f" The research says: {cited[0]['text']}"
        risks.append((title, likelihood, impact, description, mitigation, workstream["key"], source))
    if len(objective_streams) > 4:
        risks.append(("Too many parallel workstreams", 3, 3,
                      f"{len(objective_streams)} objective workstreams run side by side under one steering committee.",
                      "Phase the objectives or give each a lead with delegated decision rights.", "governance"))
    risks.append(("Resistance from the people affected", 3, 3,
                  "New ways of working are adopted slowly if the people affected are not involved early.",
                  "Involve key users in design, train before go-live and track adoption after it.", "change"))
    return risks


def _evidence_risks(research: dict[str, Any] | None, canvas: dict[str, Any] | None) -> list[tuple]:
    risks = []
    if research is None:
        risks.append(("Plan not checked against outside evidence", 2, 2,
                      "No web research was run for this session, so the plan rests on the team's own view.",
                      "Run web research on the session's sources and revisit the plan.", "pmo"))
    elif research.get("failed"):
        total = research["read"] + research["failed"]
        risks.append(("Incomplete evidence base", 3, 2,
                      f"{research['failed']} of {total} research sources could not be read.",
                      "Replace the failed sources with reachable ones and run the research again.", "pmo"))
    partners = next((block["items"] for block in (canvas or {}).get("blocks", []) if block["key"] == "key_partners"),
                    [])
    if partners:
        named = " ".join(item["text"] for item in partners[:3])
        risks.append(("Dependency on key partners", 3, 3, f"Delivery relies on partners. {named}",
                      "Agree terms and fallbacks with each partner before the stage gate.", "governance"))
    return risks
