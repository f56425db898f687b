"""Programs: generated end to end from a session, listed, and shown with a server-rendered Gantt chart."""

from __future__ import annotations

import csv
import io
import re
from xml.etree import ElementTree

import icalendar
import pytest

from epm.extensions import db
from epm.models import Program
from tests.conftest import make_user, sign_in
from tests.support import wait_for

SESSION = {"name": "Meal kits 2027", "business": "We run a subscription meal-kit service for busy families.",
           "objectives": ["Grow subscribers by 30%", "Launch a mobile app"], "budget": "250000",
           "deadline": "2027-06-30", "team_size": 6}


def _generate(client) -> tuple[dict, dict]:
    session = client.post("/api/sessions", json=SESSION).get_json()["session"]
    return session, _run_generation(client, session["id"])


def _chart(html: str) -> tuple[ElementTree.Element, ElementTree.Element]:
    """The label column and the chart, each a well-formed SVG."""
    labels = re.search(r"<svg class=\"gantt-labels\".*?</svg>", html, re.S).group(0)
    chart = re.search(r"<svg class=\"gantt-chart\".*?</svg>\s*</div>", html, re.S).group(0)
    return ElementTree.fromstring(labels), ElementTree.fromstring(chart.rsplit("</div>", 1)[0])


NS = {"s": "http://www.w3.org/2000/svg"}


def test_generated_program_page_has_a_grouped_sorted_svg_gantt(auth_client):
    session, job = _generate(auth_client)
    url = job["result"]["url"]
    assert re.fullmatch(r"/programs/\d+", url)
    page = auth_client.get(url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    labels, chart = _chart(html)

    # Grouped by workstream, a header per group; groups by their first start, tasks by start within.
    groups = [text.get("data-group") for text in labels.findall(".//s:text[@data-group]", NS)]
    rows = chart.findall(".//s:g[@data-task]", NS)
    order = [row.get("data-workstream") for row in rows]
    assert groups == list(dict.fromkeys(order)) and len(groups) == 5
    for group in groups:
        starts = [row.get("data-start") for row in rows if row.get("data-workstream") == group]
        assert starts == sorted(starts)
    firsts = [next(r.get("data-start") for r in rows if r.get("data-workstream") == g) for g in groups]
    assert firsts == sorted(firsts)
    assert len(labels.findall(".//s:text[@data-label-for]", NS)) == len(rows)

    critical = [g for g in rows if "data-critical" in g.attrib]
    assert critical and len(critical) < len(rows)
    for row in rows:
        assert row.find("s:title", NS).text
        assert row.find("s:text", NS) is None  # no "critical" printed after a bar
    for row in critical:
        assert "on the critical path" in row.find("s:title", NS).text
        assert any(r.get("fill") == "url(#gantt-hatch)" for r in row.findall("s:rect", NS))
    # Bars are placed in percentages of the chart, so it fills the card's width.
    assert all(row.find("s:rect", NS).get("x").endswith("%") for row in rows)
    diamonds = chart.findall(".//s:g[@data-milestone]", NS)
    assert len(diamonds) == len(job_program(auth_client, url)["milestones"])
    deadline = chart.find(".//s:g[@data-line='deadline']", NS)
    assert deadline is not None and deadline.get("data-date") == "2027-06-30"
    legend = re.search(r'<ul class="gantt-legend".*?</ul>', html, re.S).group(0)
    assert legend.count("Critical path") == 1 and "Deadline" in legend and "Milestone" in legend
    phases = re.findall(r'data-phase>\s*<strong>([^<]+)</strong>', html)
    assert len(phases) == 5
    for heading in ("Workstreams", "Milestones", "Budget", "Resource load", "Risk register"):
        assert f">{heading}</h2>" in html
    assert "style=" not in html.split("<main", 1)[1]  # the strict CSP allows no inline styles

    session_page = auth_client.get(f"/sessions/{session['id']}").get_data(as_text=True)
    block = re.search(r'data-operation="epm_generation".*?</section>', session_page, re.S).group(0)
    assert f'href="{url}"' in block and "View program" in block


def job_program(client, url: str) -> dict:
    program_id = int(url.rsplit("/", 1)[1])
    app = client.application
    with app.app_context():
        return db.session.get(Program, program_id).data


def test_regenerated_programs_are_versioned_the_latest_marked_and_comparable(app, auth_client):
    session, first = _generate(auth_client)
    auth_client.patch(f"/api/sessions/{session['id']}", json={"deadline": "2027-03-31"})
    second = _run_generation(auth_client, session["id"])
    third = _run_generation(auth_client, session["id"])
    assert (first["result"]["version"], second["result"]["version"], third["result"]["version"]) == (1, 2, 3)
    listed = auth_client.get("/api/programs").get_json()["programs"]
    assert [(p["version"], p["latest"]) for p in listed] == [(3, True), (2, False), (1, False)]

    newest = auth_client.get(third["result"]["url"]).get_data(as_text=True)
    head = re.search(r'<header class="result-head">.*?</header>', newest, re.S).group(0)
    assert "<strong>v3</strong>" in head and "tag-latest" in head
    older = auth_client.get(first["result"]["url"]).get_data(as_text=True)
    assert "older version" in older and f'href="{third["result"]["url"]}"' in older
    index = auth_client.get("/programs").get_data(as_text=True)
    assert index.count("tag-latest") == 2  # in the recent list and the table, once each

    compare = auth_client.get(f"{second['result']['url']}/compare?with={first['result']['program_id']}")
    assert compare.status_code == 200
    html = compare.get_data(as_text=True)
    assert "What changed from v1 to v2" in html
    headline = re.search(r'data-compare="headline".*?</table>', html, re.S).group(0)
    assert re.search(r"Deadline</th><td>2027-06-30</td><td><strong>2027-03-31</strong>", headline)
    assert 'data-compare="tasks-moved"' in html
    default = auth_client.get(f"{second['result']['url']}/compare").get_data(as_text=True)
    assert "What changed from v1 to v2" in default
    assert auth_client.get(f"{first['result']['url']}/compare?with=abc").status_code == 422
    assert auth_client.get(f"{first['result']['url']}/compare?with={first['result']['program_id']}").status_code \
        == 422


def _run_generation(client, session_id: int) -> dict:
    job = client.post(f"/api/sessions/{session_id}/epm_generation").get_json()["job"]

    def finished():
        current = client.get(f"/api/background-jobs/{job['id']}").get_json()["job"]
        return current if current["terminal"] else None

    done = wait_for(finished, timeout=20, message="EPM generation to finish")
    assert done["status"] == "completed", done
    return done


def test_programs_list_page_and_api(auth_client):
    empty = auth_client.get("/programs").get_data(as_text=True)
    assert "data-programs-in-progress" in empty and "data-programs-recent" in empty
    assert "No programs yet" in empty
    assert auth_client.get("/api/programs").get_json() == {"programs": []}

    session, job = _generate(auth_client)
    listed = auth_client.get("/api/programs?limit=5").get_json()["programs"]
    assert len(listed) == 1
    program = listed[0]
    assert program["url"] == job["result"]["url"]
    assert program["session_id"] == session["id"] and program["session_name"] == "Meal kits 2027"
    assert set(program) == {"id", "name", "url", "session_id", "session_name", "version", "latest", "created_at"}

    page = auth_client.get("/programs").get_data(as_text=True)
    recent = re.search(r"<section[^>]*data-programs-recent.*?</section>", page, re.S).group(0)
    assert program["url"] in recent
    assert "Nothing is being generated right now." in page

    bad = auth_client.get("/api/programs?limit=0")
    assert bad.status_code == 422 and "limit" in bad.get_json()["error"]["fields"]


def test_programs_page_shows_generation_in_progress(app, auth_client):
    app.config["EPM_STAGE_SECONDS"] = 0.5
    session = auth_client.post("/api/sessions", json=SESSION).get_json()["session"]
    job = auth_client.post(f"/api/sessions/{session['id']}/epm_generation").get_json()["job"]
    page = auth_client.get("/programs").get_data(as_text=True)
    section = re.search(r"<section[^>]*data-programs-in-progress.*?</section>", page, re.S).group(0)
    assert f'data-job-id="{job["id"]}"' in section and 'role="progressbar"' in section
    assert "Meal kits 2027" in section
    auth_client.post(f"/api/background-jobs/{job['id']}/cancel")
    wait_for(lambda: auth_client.get(f"/api/background-jobs/{job['id']}").get_json()["job"]["terminal"],
             timeout=15, message="the job to be cancelled")


def test_another_users_program_is_404(app, auth_client):
    _, job = _generate(auth_client)
    other = make_user(app, "mallory")
    client = app.test_client()
    sign_in(app, client, other.id)
    assert client.get(job["result"]["url"]).status_code == 404
    assert client.get("/api/programs").get_json() == {"programs": []}
    assert client.get("/programs/999999").status_code == 404


def test_program_outlives_its_deleted_session(app, auth_client):
    session, job = _generate(auth_client)
    assert auth_client.delete(f"/api/sessions/{session['id']}").status_code == 204
    with app.app_context():  # ON DELETE SET NULL, on SQLite too
        program = db.session.get(Program, job["result"]["program_id"])
        assert program is not None and program.session_id is None
    page = auth_client.get(job["result"]["url"])
    assert page.status_code == 200 and 'class="gantt-chart"' in page.get_data(as_text=True)
    listed = auth_client.get("/api/programs").get_json()["programs"]
    assert listed[0]["session_name"] is None
    assert "deleted" in auth_client.get("/programs").get_data(as_text=True)


def test_program_exports_are_plain_links_that_parse(app, auth_client):
    _, job = _generate(auth_client)
    url = job["result"]["url"]
    html = auth_client.get(url).get_data(as_text=True)
    assert f'href="{url}/tasks.csv"' in html and f'href="{url}/milestones.ics"' in html
    data = job_program(auth_client, url)

    tasks = auth_client.get(f"{url}/tasks.csv")
    assert tasks.status_code == 200 and tasks.mimetype == "text/csv"
    assert tasks.headers["Content-Disposition"] == 'attachment; filename="meal-kits-2027-v1.csv"'
    rows = list(csv.DictReader(io.StringIO(tasks.get_data(as_text=True))))
    assert [row["id"] for row in rows] and len(rows) == len(data["tasks"])

    calendar = auth_client.get(f"{url}/milestones.ics")
    assert calendar.status_code == 200 and calendar.mimetype == "text/calendar"
    events = icalendar.Calendar.from_ical(calendar.get_data(as_text=True)).walk("VEVENT")
    assert len(events) == len(data["milestones"]) + 1

    other = make_user(app, "eve")
    client = app.test_client()
    sign_in(app, client, other.id)
    assert client.get(f"{url}/tasks.csv").status_code == 404
    assert client.get(f"{url}/milestones.ics").status_code == 404


@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")  # alembic env.py, not ours
def test_the_versions_migration_numbers_existing_programs_in_the_order_they_were_generated(tmp_path):
    import sqlite3

    from flask_migrate import upgrade

    from epm import create_app
    from tests.conftest import _test_config

    path = tmp_path / "old.sqlite"
    app = create_app(_test_config(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", REDIS_URL=None))
    with app.app_context():
        upgrade(revision="073dfe440c56")  # the schema before versions
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO users (id, username, password_hash, created_at) "
                         "VALUES (1, 'u', 'x', '2026-01-01')")
            conn.execute("INSERT INTO strategy_sessions (id, user_id, name, business, objectives, source_urls, "
                         "created_at, updated_at) VALUES (5, 1, 's', '', '[]', '[]', '2026-01-01', '2026-01-01')")
            for program_id, session_id, created in ((1, 5, "2026-01-03"), (2, 5, "2026-01-01"),
                                                    (3, None, "2026-01-02"), (4, 5, "2026-01-02")):
                conn.execute("INSERT INTO programs (id, user_id, session_id, name, data, created_at) "
                             "VALUES (?, 1, ?, 'p', '{}', ?)", (program_id, session_id, created))
        upgrade()
        db.session.remove()
        db.engine.dispose()
    app.extensions["epm.jobs"].runner.shutdown(grace=1)
    with sqlite3.connect(path) as conn:
        versions = dict(conn.execute("SELECT id, version FROM programs").fetchall())
    assert versions == {2: 1, 4: 2, 1: 3, 3: 1}
