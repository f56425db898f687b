"""The jobs dashboard without JS: listing, filters, Cancel and Retry forms, one job's page, ownership."""

from __future__ import annotations

import re

from tests.conftest import make_user, sign_in
from tests.support import wait_for


def _start(client, **params) -> dict:
    response = client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": params})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job"]


def _job(client, job_id: str) -> dict:
    return client.get(f"/api/background-jobs/{job_id}").get_json()["job"]


def _finished(client, job_id: str) -> dict:
    return wait_for(lambda: (job := _job(client, job_id))["terminal"] and job, message=f"job {job_id} to end")


def _row(page: str, job_id: str) -> str:
    match = re.search(rf'<tr data-job-id="{job_id}".*?</tr>', page, re.S)
    assert match, f"no row for {job_id}"
    return match.group(0)


def test_dashboard_lists_running_and_finished_jobs_with_their_actions(auth_client):
    done = _finished(auth_client, _start(auth_client, steps=1)["id"])
    failed = _finished(auth_client, _start(auth_client, steps=2, fail_at=2)["id"])
    running = _start(auth_client, steps=3, step_seconds=30)

    page = auth_client.get("/jobs").get_data(as_text=True)
    running_part, finished_part = page.split('id="finished-h"')
    assert running["id"] in running_part
    assert done["id"] in finished_part and failed["id"] in finished_part

    assert f'action="/jobs/{running["id"]}/cancel"' in _row(page, running["id"])
    failed_row = _row(page, failed["id"])
    assert f'action="/jobs/{failed["id"]}/retry"' in failed_row
    assert "The countdown was told to fail at step 2." in failed_row
    done_row = _row(page, done["id"])
    assert f'href="/jobs/{done["id"]}"' in done_row and "Retry" not in done_row
    assert re.search(r'<time datetime="[^"]+Z" title="[^"]+ UTC" data-relative>just now</time>', done_row)

    auth_client.post(f"/api/background-jobs/{running['id']}/cancel")
    _finished(auth_client, running["id"])


def test_dashboard_filters_by_status_and_type(auth_client):
    done = _finished(auth_client, _start(auth_client, steps=1)["id"])
    failed = _finished(auth_client, _start(auth_client, steps=1, fail_at=1)["id"])

    # The status filter reads PostgreSQL, whose row follows the terminal state in Redis: wait for it.
    def failed_page() -> str | None:
        text = auth_client.get("/jobs?status=failed").get_data(as_text=True)
        return text if failed["id"] in text else None

    page = wait_for(failed_page, message="the failed job's row")
    assert done["id"] not in page
    assert '<option value="failed" selected>' in page

    page = auth_client.get("/jobs?job_type=epm_generation").get_data(as_text=True)
    assert failed["id"] not in page and done["id"] not in page
    assert "None match these filters." in page


def test_dashboard_explains_a_bad_filter_and_still_lists_the_jobs(auth_client):
    done = _finished(auth_client, _start(auth_client, steps=1)["id"])
    response = auth_client.get("/jobs?status=bogus&job_type=nope")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "There is no status “bogus”" in page and "There is no job type “nope”" in page
    assert done["id"] in page


def test_cancel_and_retry_forms_work_without_js_and_return_where_they_came_from(auth_client):
    job = _start(auth_client, steps=3, step_seconds=30)
    response = auth_client.post(f"/jobs/{job['id']}/cancel", data={"next": "/jobs?status=running"})
    assert response.status_code == 302 and response.headers["Location"] == "/jobs?status=running"
    cancelled = _finished(auth_client, job["id"])
    assert cancelled["status"] == "cancelled"

    response = auth_client.post(f"/jobs/{job['id']}/retry", data={"next": "https://evil.example/"})
    assert response.headers["Location"] == "/jobs"  # never off-site
    retried = [j for j in auth_client.get("/api/background-jobs").get_json()["jobs"] if j["retry_of"] == job["id"]]
    assert len(retried) == 1 and retried[0]["status"] in ("pending", "running")
    assert "started again" in auth_client.get("/jobs").get_data(as_text=True)

    auth_client.post(f"/api/background-jobs/{retried[0]['id']}/cancel")
    _finished(auth_client, retried[0]["id"])

    # Retrying a completed job is refused with a readable message, nothing started.
    done = _finished(auth_client, _start(auth_client, steps=1)["id"])
    auth_client.post(f"/jobs/{done['id']}/retry")
    page = auth_client.get("/jobs").get_data(as_text=True)
    assert 'class="flash flash-error"' in page
    assert not [j for j in auth_client.get("/api/background-jobs").get_json()["jobs"] if j["retry_of"] == done["id"]]


def test_job_page_shows_outcome_and_links_the_retry(auth_client):
    failed = _finished(auth_client, _start(auth_client, steps=1, fail_at=1)["id"])
    page = auth_client.get(f"/jobs/{failed['id']}").get_data(as_text=True)
    assert "Failed: The countdown was told to fail at step 1." in page
    assert f'action="/jobs/{failed["id"]}/retry"' in page

    auth_client.post(f"/jobs/{failed['id']}/retry")
    page = auth_client.get(f"/jobs/{failed['id']}").get_data(as_text=True)
    assert "Retried as" in page
    retry = [j for j in auth_client.get("/api/background-jobs").get_json()["jobs"] if j["retry_of"] == failed["id"]]
    _finished(auth_client, retry[0]["id"])

    done = _finished(auth_client, _start(auth_client, steps=1)["id"])
    page = auth_client.get(done["result"]["url"]).get_data(as_text=True)
    assert "Countdown finished" in page and "Counted 1 step" in page


def test_another_users_job_page_and_actions_are_not_found(app, auth_client):
    job = _finished(auth_client, _start(auth_client, steps=1, fail_at=1)["id"])
    other = make_user(app, "mallory")
    client = app.test_client()
    sign_in(app, client, other.id)
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    client.post(f"/jobs/{job['id']}/retry")
    assert client.get("/api/background-jobs").get_json()["jobs"] == []
    assert f'data-job-id="{job["id"]}"' not in client.get("/jobs").get_data(as_text=True)


def test_signed_out_visitor_is_sent_to_sign_in(client):
    response = client.get("/jobs")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
