"""Exports of results, parsed the way their users' tools parse them: the csv module, an iCalendar parser."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime

import icalendar

from epm.operations.export import CSV_COLUMNS, program_csv, program_ics, research_markdown
from epm.operations.program import build_program
from tests.test_operations_canvas import coffee_brief, coffee_research

START = date(2026, 12, 1)


def coffee_program() -> dict:
    return build_program(coffee_brief(), start=START, research=coffee_research())


def test_program_csv_has_one_row_per_task_with_dates_people_and_dependencies():
    program = coffee_program()
    rows = list(csv.DictReader(io.StringIO(program_csv(program))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(program["tasks"])
    by_id = {task["id"]: task for task in program["tasks"]}
    for row in rows:
        task = by_id[row["id"]]
        assert (row["task"], row["start"], row["finish"]) == (task["name"], task["start"], task["finish"])
        assert int(row["working_days"]) == task["days"] and float(row["people"]) == task["fte"]
        assert row["depends_on"].split() == task["depends_on"]
        assert row["critical"] == ("yes" if task["critical"] else "no")
    names = {w["key"]: w["name"] for w in program["workstreams"]}
    assert rows[0]["workstream"] == names["pmo"]


def test_csv_cells_that_look_like_formulas_are_defused():
    program = {"workstreams": [{"key": "w", "name": "W"}],
               "tasks": [{"id": "T01", "name": "=HYPERLINK(\"http://evil\")", "workstream": "w", "depends_on": []}]}
    row = next(csv.DictReader(io.StringIO(program_csv(program))))
    assert row["task"].startswith("'=")


def test_program_ics_parses_with_one_event_per_milestone_and_the_deadline():
    program = coffee_program()
    body = program_ics(program, program_id=41, version=3, host="epm.example",
                       now=datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    assert all(len(line.encode()) <= 75 for line in body.split("\r\n"))
    calendar = icalendar.Calendar.from_ical(body)
    events = calendar.walk("VEVENT")
    assert len(events) == len(program["milestones"]) + 1
    dates = {str(event["SUMMARY"]): event.decoded("DTSTART") for event in events}
    for milestone in program["milestones"]:
        assert dates[milestone["name"]] == date.fromisoformat(milestone["date"])
    assert dates["Deadline: Northside Roasters growth plan"] == date(2027, 12, 15)
    assert len({str(event["UID"]) for event in events}) == len(events)
    assert str(calendar["X-WR-CALNAME"]) == "Northside Roasters growth plan \u2014 EPM program (v3)"
    app = next(e for e in events if str(e["SUMMARY"]) == "Delivered: Launch a mobile order-ahead app")
    assert "Evidence:" in str(app["DESCRIPTION"])


def test_research_markdown_has_summary_facts_with_links_and_every_source():
    report = coffee_research()
    text = research_markdown(report, session_name="Northside Roasters growth plan", researched="2026-12-01 09:00 UTC")
    assert text.startswith("# Research: Northside Roasters growth plan\n")
    assert "## Summary" in text and "## Key facts" in text and "## Sources" in text
    links = re.findall(r"\]\((https://research\.example/[a-z-]+)\)", text)
    assert set(links) == {s["url"] for s in report["sources"]}
    assert "$7.80" in text and r"31% of morning sales" in text
    assert text.count("\n- ") >= len(report["facts"])


def test_markdown_escapes_what_a_page_could_inject():
    report = {"summary": "Read 1.", "facts": [{"text": "See [here](javascript:alert(1)) <b>now</b>.",
                                              "url": "https://x.example/a b", "source": "X"}], "sources": []}
    text = research_markdown(report, session_name="S", researched="today")
    assert "[here](javascript" not in text and "<b>" not in text and "https://x.example/a%20b" in text
