"""Results in portable formats: a program's tasks as CSV, its milestones and deadline as iCalendar,
a research report as Markdown. Pure functions of the stored data, so an export always matches the page.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

CSV_COLUMNS = ("id", "workstream", "task", "start", "finish", "working_days", "people", "effort_person_days",
               "depends_on", "critical", "float_days")


def program_csv(program: dict[str, Any]) -> str:
    """One row per task, in workstream order then by start, with its dates, people and dependencies."""
    names = {workstream["key"]: workstream["name"] for workstream in program.get("workstreams", [])}
    order = {key: index for index, key in enumerate(names)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for task in sorted(program.get("tasks", []),
                       key=lambda t: (order.get(t.get("workstream"), len(order)), t.get("es") or 0, t["id"])):
        writer.writerow([task["id"], names.get(task.get("workstream"), task.get("workstream", "")),
                         _cell(task["name"]), task.get("start", ""), task.get("finish", ""), task.get("days", ""),
                         task.get("fte", ""), round(float(task.get("days") or 0) * float(task.get("fte") or 0), 1),
                         " ".join(task.get("depends_on", [])), "yes" if task.get("critical") else "no",
                         task.get("total_float", "")])
    return out.getvalue()


def _cell(value: str) -> str:
    """A text cell that a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def program_ics(program: dict[str, Any], *, program_id: int, version: int | None, host: str,
                now: datetime | None = None) -> str:
    """An iCalendar (RFC 5545) with an all-day event per milestone and one for the deadline."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    name = program.get("name", "EPM program")
    label = f"{name} (v{version})" if version else name
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//epm//EPM program export//EN", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", f"X-WR-CALNAME:{_escape(label)}"]
    events = [(f"milestone-{index}", milestone["name"], milestone["date"],
               _milestone_description(milestone)) for index, milestone in enumerate(program.get("milestones", []))]
    if program.get("deadline"):
        events.append(("deadline", f"Deadline: {program.get('session', {}).get('name') or name}",
                       program["deadline"], "The deadline the program is planned against."))
    for key, summary, day, description in events:
        first = date.fromisoformat(day)
        lines += ["BEGIN:VEVENT", f"UID:program-{program_id}-v{version or 0}-{key}@{host}", f"DTSTAMP:{stamp}",
                  f"DTSTART;VALUE=DATE:{first:%Y%m%d}", f"DTEND;VALUE=DATE:{first + timedelta(days=1):%Y%m%d}",
                  f"SUMMARY:{_escape(summary)}", f"DESCRIPTION:{_escape(description)}", "TRANSP:TRANSPARENT",
                  "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "".join(_fold(line) + "\r\n" for line in lines)


def _milestone_description(milestone: dict[str, Any]) -> str:
    parts = [f"Working day {milestone.get('day')} of the program."]
    if milestone.get("critical"):
        parts.append("On the critical path.")
    if milestone.get("after_deadline"):
        parts.append("Falls after the deadline.")
    if milestone.get("evidence"):
        parts.append(f"Evidence: {milestone['evidence']['text']} ({milestone['evidence'].get('url')})")
    return " ".join(parts)


def _escape(value: str) -> str:
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n"))


def _fold(line: str) -> str:
    """Lines of at most 75 octets, continued with a leading space (RFC 5545, 3.1), never splitting a character."""
    out, current = [], ""
    for char in line:
        limit = 75 if not out else 74
        if len((current + char).encode()) > limit:
            out.append(current)
            current = char
        else:
            current += char
    out.append(current)
    return "\r\n ".join(out)


def research_markdown(report: dict[str, Any], *, session_name: str, researched: str) -> str:
    """The research report as Markdown: summary, key facts with their sources, then each source."""
    lines = [f"# Research: {_md(session_name)}", "", f"Researched {researched}. {_md(report.get('summary', ''))}", ""]
    if report.get("overview"):
        lines += ["## Summary", ""] + [_md(sentence) for sentence in report["overview"]] + [""]
    if report.get("facts"):
        lines += ["## Key facts", ""]
        lines += [f"- {_md(fact['text'])} ([{_md(fact.get('source') or fact['url'])}]({_url(fact['url'])}))"
                  for fact in report["facts"]]
        lines.append("")
    lines += ["## Sources", ""]
    for source in report.get("sources", []):
        link = source.get("final_url") or source["url"]
        if source.get("ok"):
            lines += [f"### [{_md(source.get('title') or link)}]({_url(link)})", ""]
            if source.get("summary"):
                lines += [" ".join(_md(sentence) for sentence in source["summary"]), ""]
            lines += [f"- {_md(fact['text'])}" for fact in source.get("facts", [])]
        else:
            lines += [f"### Could not read {_url(source['url'])}", "", _md(source.get("error", ""))]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _md(value: str) -> str:
    """Text with Markdown's active characters escaped, so a page's words cannot inject links or markup."""
    return re.sub(r"([\\`*_{}\[\]<>#|!])", r"\\\1", value)


def _url(value: str) -> str:
    return value.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")
