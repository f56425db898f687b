"""What changed between two versions of a session's program: dates, tasks and risks."""

from __future__ import annotations

from typing import Any


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The differences from ``old`` to ``new``: headline dates and figures, tasks and risks added,
    removed or moved (tasks matched by workstream and name, risks by title)."""
    return {"headline": _headline(old, new), "tasks": _tasks(old, new), "risks": _risks(old, new),
            "milestones": _milestones(old, new)}


def _headline(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [("Start", old.get("start"), new.get("start")),
            ("Finish", old.get("schedule", {}).get("finish"), new.get("schedule", {}).get("finish")),
            ("Working days", old.get("schedule", {}).get("duration_days"),
             new.get("schedule", {}).get("duration_days")),
            ("Deadline", old.get("deadline"), new.get("deadline")),
            ("Buffer before the deadline (working days)", old.get("schedule", {}).get("slack_days"),
             new.get("schedule", {}).get("slack_days")),
            ("Peak load (people)", old.get("resources", {}).get("peak_load"),
             new.get("resources", {}).get("peak_load")),
            ("Budget", old.get("budget", {}).get("total"), new.get("budget", {}).get("total")),
            ("Tasks", len(old.get("tasks", [])), len(new.get("tasks", []))),
            ("Risks", len(old.get("risks", [])), len(new.get("risks", [])))]
    return [{"label": label, "old": before, "new": after, "changed": before != after}
            for label, before, after in rows]


def _key(task: dict[str, Any], names: dict[str, str]) -> tuple[str, str]:
    return names.get(task.get("workstream"), task.get("workstream", "")), task["name"]


def _tasks(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    old_names = {w["key"]: w["name"] for w in old.get("workstreams", [])}
    new_names = {w["key"]: w["name"] for w in new.get("workstreams", [])}
    before = {_key(task, old_names): task for task in old.get("tasks", [])}
    after = {_key(task, new_names): task for task in new.get("tasks", [])}
    moved = []
    for key in after.keys() & before.keys():
        a, b = before[key], after[key]
        if (a.get("start"), a.get("finish")) != (b.get("start"), b.get("finish")):
            moved.append({"workstream": key[0], "name": key[1], "old_start": a.get("start"),
                          "old_finish": a.get("finish"), "new_start": b.get("start"), "new_finish": b.get("finish")})
    return {"added": [{"workstream": k[0], "name": k[1], "start": after[k].get("start"),
                       "finish": after[k].get("finish")} for k in after if k not in before],
            "removed": [{"workstream": k[0], "name": k[1], "start": before[k].get("start"),
                         "finish": before[k].get("finish")} for k in before if k not in after],
            "moved": sorted(moved, key=lambda row: (row["new_start"] or "", row["name"]))}


def _risks(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    before = {risk["title"]: risk for risk in old.get("risks", [])}
    after = {risk["title"]: risk for risk in new.get("risks", [])}
    rescored = [{"title": title, "old": before[title].get("score"), "new": after[title].get("score")}
                for title in after if title in before and before[title].get("score") != after[title].get("score")]
    return {"added": [after[title] for title in after if title not in before],
            "removed": [before[title] for title in before if title not in after], "rescored": rescored}


def _milestones(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    before = {m["name"]: m.get("date") for m in old.get("milestones", [])}
    after = {m["name"]: m.get("date") for m in new.get("milestones", [])}
    return [{"name": name, "old": before.get(name), "new": after.get(name)}
            for name in list(dict.fromkeys([*after, *before])) if before.get(name) != after.get(name)]
