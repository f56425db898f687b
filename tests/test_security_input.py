"""Hostile input: every bad request is a clear 4xx, never a 503 or 500, and nothing jams the outbox."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from epm import metrics
from epm.extensions import db
from epm.jobs.job import Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.models import BackgroundJob, clean_text
from epm.jobs.store import Guard


def _outage_count() -> float:
    return sum(metrics.BACKEND_ERRORS.labels(backend)._value.get() for backend in ("redis", "database"))


def _assert_client_error(response, status: int = 400) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["error"]["code"] and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("path", ["/api/sessions/2147483648", "/api/sessions/99999999999999999999",
                                  "/api/background-jobs/%00", "/api/background-jobs/a%00b/cancel"])
def test_out_of_range_ids_and_nul_in_paths_are_client_errors_not_outages(auth_client, path):
    before = _outage_count()
    method = auth_client.post if path.endswith("/cancel") else auth_client.get
    response = method(path)
    assert response.status_code in (400, 404), response.get_data(as_text=True)
    assert response.get_json()["error"]["code"]
    assert _outage_count() == before


def test_out_of_range_id_on_a_page_is_a_readable_404(auth_client):
    response = auth_client.get("/programs/99999999999999999999")
    assert response.status_code == 404
    assert "text/html" in response.content_type


@pytest.mark.parametrize("name", ["a\x00b", "a\ud800b"])
def test_session_name_with_nul_or_lone_surrogate_is_refused_with_400(auth_client, name):
    before = _outage_count()
    body = json.dumps({"name": name}, ensure_ascii=True)
    response = auth_client.post("/api/sessions", data=body, content_type="application/json")
    assert _assert_client_error(response)["code"] == "invalid_characters"
    assert _outage_count() == before


def test_source_url_with_nul_is_refused(auth_client):
    response = auth_client.post("/api/sessions", json={"name": "x", "source_urls": ["http://a\u0000b.example/"]})
    assert _assert_client_error(response)["code"] == "invalid_characters"


def test_sign_in_with_nul_in_username_is_a_readable_400_page(client, user):
    before = _outage_count()
    response = client.post("/login", data={"username": "ab\x00c", "password": "whatever1"})
    assert response.status_code == 400
    assert "text/html" in response.content_type and "not allowed" in response.get_data(as_text=True)
    assert _outage_count() == before


def test_json_nested_100000_deep_is_refused_with_400(auth_client):
    body = "[" * 100_000 + "]" * 100_000
    response = auth_client.post("/api/sessions", data=body, content_type="application/json")
    assert _assert_client_error(response)["code"] == "too_deeply_nested"


def test_json_nested_moderately_deep_is_refused_before_any_view(auth_client):
    body = {"name": "x", "objectives": json.loads("[" * 40 + "]" * 40)}
    response = auth_client.post("/api/sessions", json=body)
    assert _assert_client_error(response)["code"] == "too_deeply_nested"


def test_body_over_the_limit_answers_413_before_sign_in(app, client):
    app.config["WTF_CSRF_ENABLED"] = True
    response = client.post("/login", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1),
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    api = client.post("/api/sessions", data=b"[" + b" " * (2 * 1024 * 1024) + b"]", content_type="application/json")
    assert _assert_client_error(api, 413)["code"] == "request_entity_too_large"


def test_clean_text_drops_nul_and_replaces_lone_surrogates():
    assert clean_text("a\x00b\ud800c") == "ab\ufffdc"
    assert clean_text("plain — text") == "plain — text"


def _terminal_job(user_id: str, **fields) -> Job:
    now = iso(utcnow())
    job = Job(id=uuid.uuid4().hex, job_type="research", user_id=user_id, title="Research",
              status=JobStatus.FAILED, message="Failed", created_at=now, updated_at=now, completed_at=now,
              error_code="all_sources_failed", **fields)
    job.seq = next_seq(0)
    return job


def test_terminal_state_with_nul_and_surrogates_is_written(app):
    service = app.extensions["epm.jobs"]
    job = _terminal_job("1", error="http://a\x00b.example/ could not be read \ud800")
    job.result = {"sources": ["a\x00b"]}
    assert service.records.record_terminal(job)
    with app.app_context():
        row = db.session.get(BackgroundJob, job.id)
        assert row.error == "http://ab.example/ could not be read \ufffd"
        assert row.result == {"sources": ["ab"]}


@pytest.mark.real_backends
def test_a_refused_outbox_entry_becomes_a_dead_letter_and_the_others_are_written(app, backend):
    if backend != "real":
        pytest.skip("SQLite stores what PostgreSQL refuses: the dead letter needs PostgreSQL")
    service = app.extensions["epm.jobs"]
    bad = _terminal_job("1")
    bad.title = "t" * 500  # longer than the column: PostgreSQL refuses the row for its data
    good = [_terminal_job("1") for _ in range(3)]
    for job in [bad, *good]:
        service.store.write(job, Guard.RECORD)
        service.store.outbox_add(job.id)
    assert service.store.outbox_ids()[0] == bad.id
    with app.app_context():  # as the maintenance loop runs it
        assert service.records.flush_outbox() == 3
    with app.app_context():
        written = set(db.session.scalars(select(BackgroundJob.id).where(BackgroundJob.id.in_([j.id for j in good]))))
    assert written == {job.id for job in good}
    assert service.store.outbox_depth() == 0
    letters = service.store.dead_letters()
    assert list(letters) == [bad.id] and "too long" in letters[bad.id]["reason"]
    body, _ = metrics.render(service)
    assert b"epm_outbox_dead_letters 1.0" in body
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["jobs", "dead-letters", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["dead_letters"][0]["job_id"] == bad.id
