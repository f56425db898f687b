"""The /api/background-jobs blueprint: list, ETag, one job, cancel, retry, acknowledge, errors."""

from __future__ import annotations

import pytest

from tests.conftest import make_user, sign_in
from tests.support import recorded_row, wait_for


def start(client, **params):
    response = client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": params})
    assert response.status_code == 202, response.json
    assert response.headers["Location"].endswith(f"/api/background-jobs/{response.json['job']['id']}")
    return response.json["job"]


def finished(client, job_id):
    def done():
        job = client.get(f"/api/background-jobs/{job_id}").json["job"]
        return job if job["terminal"] else None

    return wait_for(done, message=f"job {job_id} to finish")


def test_started_job_runs_to_completion_and_is_recorded(app, auth_client):
    job = start(auth_client, steps=3)
    assert job["status"] == "pending" and job["title"] == "Demo countdown"
    done = finished(auth_client, job["id"])
    assert done["status"] == "completed" and done["progress"] == 100
    assert done["result"]["summary"] == "Counted 3 steps"
    assert done["seq"] > job["seq"]
    row = recorded_row(app, job["id"])
    assert row.result["steps"] == 3 and row.completed_at is not None and row.params == {"steps": 3}


def test_list_is_newest_first_with_filters(auth_client):
    first = finished(auth_client, start(auth_client, steps=1)["id"])
    failing = finished(auth_client, start(auth_client, steps=3, fail_at=2)["id"])
    jobs = auth_client.get("/api/background-jobs").json["jobs"]
    assert [j["id"] for j in jobs] == [failing["id"], first["id"]]
    only_failed = auth_client.get("/api/background-jobs?status=failed").json["jobs"]
    assert [j["id"] for j in only_failed] == [failing["id"]]
    assert auth_client.get("/api/background-jobs?limit=1").json["jobs"][0]["id"] == failing["id"]


def test_list_answers_304_until_the_users_jobs_change(auth_client):
    finished(auth_client, start(auth_client, steps=1)["id"])
    first = auth_client.get("/api/background-jobs")
    etag = first.headers["ETag"]
    again = auth_client.get("/api/background-jobs", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag
    finished(auth_client, start(auth_client, steps=1)["id"])
    changed = auth_client.get("/api/background-jobs", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and len(changed.json["jobs"]) == 2


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=abc", "limit"), ("limit=101", "limit"),
                                          ("status=sleeping", "status"), ("job_type=nope", "job_type")])
def test_bad_list_filters_are_refused_with_the_field_named(auth_client, query, field):
    response = auth_client.get(f"/api/background-jobs?{query}")
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_failed"
    assert field in response.json["error"]["fields"]


def test_failed_job_carries_a_message_fit_for_a_user(auth_client):
    job = finished(auth_client, start(auth_client, steps=3, crash_at=2)["id"])
    assert job["status"] == "failed" and job["error_code"] == "internal_error"
    assert "demo crash" not in job["error"] and "Traceback" not in job["error"]
    assert "logged" in job["error"]


def test_another_users_job_is_not_found_and_its_existence_not_revealed(app, auth_client):
    job = start(auth_client, steps=1)
    bob = make_user(app, "bob")
    other = app.test_client()
    sign_in(app, other, bob.id)
    for method, path in [("get", ""), ("post", "/cancel"), ("post", "/retry"), ("post", "/acknowledge"),
                         ("get", "/events")]:
        response = getattr(other, method)(f"/api/background-jobs/{job['id']}{path}")
        assert response.status_code == 404, path
        assert response.json["error"]["code"] == "job_not_found"
    assert other.get("/api/background-jobs").json["jobs"] == []
    missing = other.get("/api/background-jobs/does-not-exist")
    assert missing.json == {"error": {"code": "job_not_found", "message": "There is no job 'does-not-exist'."}}


def test_signed_out_requests_get_401_json(client):
    response = client.get("/api/background-jobs")
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"


def test_cancel_stops_a_running_job(app, auth_client):
    job = start(auth_client, steps=50, step_seconds=0.2)
    wait_for(lambda: auth_client.get(f"/api/background-jobs/{job['id']}").json["job"]["status"] == "running")
    response = auth_client.post(f"/api/background-jobs/{job['id']}/cancel")
    assert response.status_code == 202 and response.json["job"]["cancel_requested"] is True
    done = finished(auth_client, job["id"])
    assert done["status"] == "cancelled" and done["progress"] < 100
    again = auth_client.post(f"/api/background-jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json["error"]["code"] == "already_finished"


def test_retry_runs_the_same_operation_with_the_same_parameters(auth_client):
    failed = finished(auth_client, start(auth_client, steps=4, fail_at=3)["id"])
    response = auth_client.post(f"/api/background-jobs/{failed['id']}/retry")
    assert response.status_code == 202
    retried = finished(auth_client, response.json["job"]["id"])
    assert retried["retry_of"] == failed["id"] and retried["status"] == "failed"  # same params, same failure
    done = finished(auth_client, start(auth_client, steps=1)["id"])
    refused = auth_client.post(f"/api/background-jobs/{done['id']}/retry")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "not_retryable"


def test_a_finished_job_is_acknowledged_exactly_once(auth_client):
    job = finished(auth_client, start(auth_client, steps=1)["id"])
    assert auth_client.get("/api/background-jobs").json["jobs"][0]["acknowledged"] is False
    assert auth_client.post(f"/api/background-jobs/{job['id']}/acknowledge").json == {"first": True}
    assert auth_client.post(f"/api/background-jobs/{job['id']}/acknowledge").json == {"first": False}
    assert auth_client.get("/api/background-jobs").json["jobs"][0]["acknowledged"] is True


@pytest.mark.parametrize("body, code", [
    ({"job_type": "no_such_thing"}, "unknown_operation"),
    ({}, "validation_failed"),
    ({"job_type": "demo_countdown", "params": {"steps": 0}}, "validation_failed"),
    ({"job_type": "demo_countdown", "params": [1]}, "validation_failed"),
])
def test_bad_start_requests_get_clear_errors_and_create_nothing(auth_client, body, code):
    response = auth_client.post("/api/background-jobs", json=body)
    assert response.json["error"]["code"] == code
    assert response.status_code in (404, 422)
    assert auth_client.get("/api/background-jobs").json["jobs"] == []


def test_unknown_paths_and_methods_answer_json(auth_client):
    missing = auth_client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = auth_client.delete("/api/background-jobs")
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


def test_operations_are_listed(auth_client):
    names = [op["name"] for op in auth_client.get("/api/operations").json["operations"]]
    assert "demo_countdown" in names
