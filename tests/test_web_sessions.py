"""Strategy sessions as JSON and as pages: create, read, edit, delete, validation, ownership, starting jobs."""

from __future__ import annotations

import re

from epm import create_app
from tests.conftest import make_user, sign_in
from tests.support import wait_for

SESSION = {"name": "Meal kits 2027", "business": "We run a subscription meal-kit service for busy families.",
           "objectives": ["Grow subscribers by 30%", "Launch a mobile app"], "budget": 250000,
           "deadline": "2027-06-30", "team_size": 6, "source_urls": ["https://example.com/about"]}


def _create(client, **overrides) -> dict:
    response = client.post("/api/sessions", json={**SESSION, **overrides})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["session"]


def _signed_in(app, username: str):
    user = make_user(app, username)
    client = app.test_client()
    sign_in(app, client, user.id)
    return client


def _job_done(client, job_id: str):
    job = client.get(f"/api/background-jobs/{job_id}").get_json()["job"]
    return job if job["terminal"] else None


def test_session_api_create_read_update_list_delete(auth_client):
    created = _create(auth_client)
    assert created["name"] == "Meal kits 2027"
    assert created["budget"] == "250000.00"
    assert created["deadline"] == "2027-06-30"
    assert created["objectives"] == ["Grow subscribers by 30%", "Launch a mobile app"]
    assert created["created_at"].endswith("Z")

    got = auth_client.get(f"/api/sessions/{created['id']}").get_json()["session"]
    assert got == created

    patched = auth_client.patch(f"/api/sessions/{created['id']}", json={"team_size": 9, "budget": None})
    assert patched.status_code == 200
    body = patched.get_json()["session"]
    assert body["team_size"] == 9 and body["budget"] is None and body["name"] == "Meal kits 2027"

    listed = auth_client.get("/api/sessions").get_json()["sessions"]
    assert [s["id"] for s in listed] == [created["id"]]

    assert auth_client.delete(f"/api/sessions/{created['id']}").status_code == 204
    assert auth_client.get(f"/api/sessions/{created['id']}").status_code == 404


def test_session_api_rejects_bad_fields_with_422_naming_each(auth_client):
    response = auth_client.post("/api/sessions", json={
        "name": "", "budget": -5, "deadline": "next week", "team_size": 0,
        "source_urls": ["ftp://example.com/x"], "objectives": "not a list", "colour": "red"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_failed"
    assert set(error["fields"]) == {"name", "budget", "deadline", "team_size", "source_urls", "objectives",
                                    "colour"}
    assert "negative" in error["fields"]["budget"]
    too_long = auth_client.post("/api/sessions", json={"name": "x" * 201})
    assert too_long.get_json()["error"]["fields"]["name"] == "Use at most 200 characters."
    assert auth_client.post("/api/sessions", data="nope").status_code == 422
    assert auth_client.patch(f"/api/sessions/{_create(auth_client)['id']}",
                             json={"team_size": 501}).status_code == 422


def test_session_form_creates_and_edits_with_lists_one_per_line(auth_client):
    response = auth_client.post("/sessions/new", data={
        "name": "Bakery", "business": "A bakery.", "objectives": "Open a shop\n\n  Sell online  \n",
        "budget": "1,500.50", "deadline": "2027-01-31", "team_size": "3",
        "source_urls": "https://a.example/\nhttp://b.example/page"})
    assert response.status_code == 302
    session_id = int(response.headers["Location"].rstrip("/").split("/")[-1])
    got = auth_client.get(f"/api/sessions/{session_id}").get_json()["session"]
    assert got["objectives"] == ["Open a shop", "Sell online"]
    assert got["source_urls"] == ["https://a.example/", "http://b.example/page"]
    assert got["budget"] == "1500.50"

    page = auth_client.get(f"/sessions/{session_id}/edit").get_data(as_text=True)
    assert "Open a shop\nSell online" in page
    edited = auth_client.post(f"/sessions/{session_id}/edit", data={"name": "Bakery 2", "team_size": "4"})
    assert edited.status_code == 302
    assert auth_client.get(f"/api/sessions/{session_id}").get_json()["session"]["name"] == "Bakery 2"


def test_session_form_shows_messages_per_field_and_keeps_input(auth_client):
    response = auth_client.post("/sessions/new", data={
        "name": "", "business": "Kept text", "budget": "lots", "deadline": "2027-13-01", "team_size": "600",
        "source_urls": "example.com"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Give the session a name." in page
    assert "Give the budget as a number" in page
    assert "Give the deadline as a date" in page
    assert "Give a whole number of people from 1 to 500." in page
    assert "is not an http:// or https:// address" in page
    assert "Kept text" in page and 'value="lots"' in page
    assert 'aria-invalid="true"' in page
    assert auth_client.get("/api/sessions").get_json()["sessions"] == []


def test_another_users_session_is_404_everywhere(app, auth_client):
    mine = _create(auth_client)
    other = _signed_in(app, "mallory")
    for method, path in [("get", f"/api/sessions/{mine['id']}"), ("patch", f"/api/sessions/{mine['id']}"),
                         ("delete", f"/api/sessions/{mine['id']}"),
                         ("post", f"/api/sessions/{mine['id']}/bmc_analysis"),
                         ("get", f"/sessions/{mine['id']}"), ("get", f"/sessions/{mine['id']}/edit"),
                         ("post", f"/sessions/{mine['id']}/delete"),
                         ("post", f"/sessions/{mine['id']}/start/bmc_analysis"),
                         ("get", f"/sessions/{mine['id']}/canvas"), ("get", f"/sessions/{mine['id']}/research")]:
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        assert getattr(other, method)(path, **kwargs).status_code == 404, path
    assert other.get("/api/sessions").get_json()["sessions"] == []
    assert auth_client.get(f"/api/sessions/{mine['id']}").status_code == 200


def test_another_users_job_is_404(app, auth_client):
    mine = _create(auth_client)
    job = auth_client.post(f"/api/sessions/{mine['id']}/bmc_analysis").get_json()["job"]
    other = _signed_in(app, "mallory")
    assert other.get(f"/api/background-jobs/{job['id']}").status_code == 404
    wait_for(lambda: _job_done(auth_client, job["id"]), message="canvas job to end")


def test_api_requires_sign_in(client):
    response = client.get("/api/sessions")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/sessions").status_code == 302


def test_start_returns_202_and_duplicate_start_is_409_with_the_running_job(app, auth_client):
    app.config["EPM_STAGE_SECONDS"] = 0.5
    session = _create(auth_client)
    first = auth_client.post(f"/api/sessions/{session['id']}/epm_generation")
    assert first.status_code == 202
    job = first.get_json()["job"]
    assert job["job_type"] == "epm_generation" and job["session_id"] == str(session["id"])
    assert first.headers["Location"].endswith(f"/api/background-jobs/{job['id']}")

    second = auth_client.post(f"/api/sessions/{session['id']}/epm_generation")
    assert second.status_code == 409
    error = second.get_json()["error"]
    assert error["code"] == "duplicate_job" and error["job"]["id"] == job["id"]

    form = auth_client.post(f"/sessions/{session['id']}/start/epm_generation", follow_redirects=True)
    assert "already running" in form.get_data(as_text=True)

    deleted = auth_client.delete(f"/api/sessions/{session['id']}")
    assert deleted.status_code == 409
    assert deleted.get_json()["error"]["code"] == "session_busy"
    page = auth_client.post(f"/sessions/{session['id']}/delete", follow_redirects=True).get_data(as_text=True)
    assert "Cancel the running job first" in page

    running = auth_client.get(f"/sessions/{session['id']}").get_data(as_text=True)
    assert f'data-job-id="{job["id"]}"' in running
    assert "EPM generation in progress…" in running and 'role="progressbar"' in running

    auth_client.post(f"/api/background-jobs/{job['id']}/cancel")
    wait_for(lambda: _job_done(auth_client, job["id"]), timeout=15, message="the job to be cancelled")
    assert auth_client.delete(f"/api/sessions/{session['id']}").status_code == 204


def test_unknown_operation_is_404_with_a_clear_code(auth_client):
    session = _create(auth_client)
    response = auth_client.post(f"/api/sessions/{session['id']}/make_coffee")
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["code"] == "unknown_operation" and "make_coffee" in error["message"]
    demo = auth_client.post(f"/api/sessions/{session['id']}/demo_countdown")
    assert demo.get_json()["error"]["code"] == "not_a_session_operation"


def test_no_js_start_form_starts_and_flashes(auth_client):
    session = _create(auth_client, source_urls=[])
    response = auth_client.post(f"/sessions/{session['id']}/start/bmc_analysis")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/sessions/{session['id']}")
    jobs = auth_client.get(f"/api/background-jobs?session_id={session['id']}").get_json()["jobs"]
    assert [j["job_type"] for j in jobs] == ["bmc_analysis"]
    wait_for(lambda: _job_done(auth_client, jobs[0]["id"]), message="canvas job to end")
    page = auth_client.get(f"/sessions/{session['id']}").get_data(as_text=True)
    assert f'href="/sessions/{session["id"]}/canvas"' in page
    canvas = auth_client.get(f"/sessions/{session['id']}/canvas").get_data(as_text=True)
    assert canvas.count('class="bmc-block') == 9 and "Value propositions" in canvas


def test_session_pages_render_empty_and_filled(auth_client):
    empty = auth_client.get("/sessions").get_data(as_text=True)
    assert "Create your first strategy session" in empty
    session = _create(auth_client)
    listing = auth_client.get("/sessions").get_data(as_text=True)
    assert "Meal kits 2027" in listing and "Create your first strategy session" not in listing
    page = auth_client.get(f"/sessions/{session['id']}").get_data(as_text=True)
    for operation, button in [("web_research", "Run web research"), ("bmc_analysis", "Build business model canvas"),
                              ("epm_generation", "Generate EPM program")]:
        assert f'data-operation="{operation}" data-session-id="{session["id"]}"' in page
        assert button in page
    assert page.count("Not generated yet.") == 3
    assert page.count("data-job-progress") == 3 and page.count("data-latest-result") == 3
    assert "No canvas yet" in auth_client.get(f"/sessions/{session['id']}/canvas").get_data(as_text=True)
    assert "No research yet" in auth_client.get(f"/sessions/{session['id']}/research").get_data(as_text=True)
    assert auth_client.get(f"/sessions/{session['id']}/delete").status_code == 200
    deleted = auth_client.post(f"/sessions/{session['id']}/delete")
    assert deleted.status_code == 302 and deleted.headers["Location"].endswith("/sessions")


def test_home_sends_signed_in_users_to_their_sessions(auth_client, client):
    assert auth_client.get("/").headers["Location"].endswith("/sessions")
    assert "/login" in client.get("/").headers["Location"]
    signed_up = client.post("/signup", data={"username": "newbie", "password": "password123"},
                            follow_redirects=True)
    assert signed_up.request.path == "/sessions"
    assert "Create your first strategy session" in signed_up.get_data(as_text=True)


def test_failed_job_shows_reason_and_retry(auth_client):
    session = _create(auth_client, source_urls=["https://no-such-site.invalid/"])  # fails: cannot be read
    job = auth_client.post(f"/api/sessions/{session['id']}/web_research").get_json()["job"]
    done = wait_for(lambda: _job_done(auth_client, job["id"]), message="research job to end")
    assert done["status"] == "failed"
    page = auth_client.get(f"/sessions/{session['id']}").get_data(as_text=True)
    block = re.search(r'data-operation="web_research".*?</section>', page, re.S).group(0)
    assert f"Failed: {done['error']}" in block
    assert "Retry" in block


def test_csrf_is_enforced_when_enabled(app):
    config = {key: app.config[key] for key in ("SECRET_KEY", "REDIS_URL", "SQLALCHEMY_DATABASE_URI",
                                               "EPM_KEY_PREFIX")}
    strict = create_app({**config, "TESTING": True, "WTF_CSRF_ENABLED": True, "EPM_MAINTENANCE": False,
                         "LOG_LEVEL": "WARNING"})
    try:
        client = _signed_in(strict, "carol")
        api = client.post("/api/sessions", json=SESSION)
        assert api.status_code == 400
        assert api.get_json()["error"]["code"] == "csrf_failed"
        form = client.post("/sessions/new", data={"name": "No token"})
        assert form.status_code == 400 and "CSRF token is missing" in form.get_data(as_text=True)
        page = client.get("/sessions/new").get_data(as_text=True)
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        ok = client.post("/api/sessions", json=SESSION, headers={"X-CSRFToken": token})
        assert ok.status_code == 201
    finally:
        strict.extensions["epm.jobs"].runner.shutdown(grace=5)
        if strict.config["REDIS_URL"]:
            strict.extensions["redis"].close()
