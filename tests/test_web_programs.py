"""Programs: generated end to end from a session, listed, and shown with a server-rendered Gantt chart."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from epm.extensions import db
from epm.models import Program
from tests.conftest import make_user, sign_in
from tests.support import wait_for

SESSION = {"name": "Meal kits 2027", "business": "We run a subscription meal-kit service for busy families.",
           "objectives": ["Grow subscribers by 30%", "Launch a mobile app"], "budget": "250000",
           "deadline": "2027-06-30", "team_size": 6}


def _generate(client) -> tuple[dict, dict]:
    session = client.post("/api/sessions", json=SESSION).get_json()["session"]
    job = client.post(f"/api/sessions/{session['id']}/epm_generation").get_json()["job"]

    def finished():
        current = client.get(f"/api/background-jobs/{job['id']}").get_json()["job"]
        return current if current["terminal"] else None

    done = wait_for(finished, timeout=20, message="EPM generation to finish")
    assert done["status"] == "completed", done
    return session, done


def test_generated_program_page_has_svg_gantt_with_critical_path_marked(auth_client):
    session, job = _generate(auth_client)
    url = job["result"]["url"]
    assert re.fullmatch(r"/programs/\d+", url)
    page = auth_client.get(url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)

    svg = re.search(r"<svg class=\"gantt\".*?</svg>", html, re.S).group(0)
    root = ElementTree.fromstring(svg)  # well-formed SVG
    ns = {"s": "http://www.w3.org/2000/svg"}
    rows = root.findall(".//s:g[@data-task]", ns)
    critical = [g for g in rows if "data-critical" in g.attrib]
    assert rows and critical and len(critical) < len(rows)
    for row in rows:
        assert row.find("s:title", ns).text  # each bar explains itself on hover
    for row in critical:
        assert "on the critical path" in row.find("s:title", ns).text
        assert [t.text for t in row.findall("s:text", ns)][-1] == "critical"
        assert any(r.get("fill") == "url(#gantt-hatch)" for r in row.findall("s:rect", ns))
    assert root.findall(".//s:g[@class='gantt-milestone critical']", ns) or root.findall(
        ".//s:g[@class='gantt-milestone']", ns)
    for heading in ("Workstreams", "Milestones", "Budget", "Resource load", "Risk register"):
        assert f">{heading}</h2>" in html
    assert "Critical path task" in html  # the legend

    session_page = auth_client.get(f"/sessions/{session['id']}").get_data(as_text=True)
    block = re.search(r'data-operation="epm_generation".*?</section>', session_page, re.S).group(0)
    assert f'href="{url}"' in block and "View program" in block


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
    assert set(program) == {"id", "name", "url", "session_id", "session_name", "created_at"}

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
    assert page.status_code == 200 and 'class="gantt"' in page.get_data(as_text=True)
    listed = auth_client.get("/api/programs").get_json()["programs"]
    assert listed[0]["session_name"] is None
    assert "deleted" in auth_client.get("/programs").get_data(as_text=True)
