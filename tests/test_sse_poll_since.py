"""The event stream's polling fallback: ``GET /api/background-jobs?since=V`` answers what changed, or 304."""

from __future__ import annotations

import time

from sqlalchemy import event

from epm.extensions import db
from epm.jobs.job import Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.store import Guard


def _saved(store, user_id: str, job_id: str, session_id: str, seq: int) -> Job:
    job = Job(id=job_id, job_type="demo_countdown", user_id=user_id, title="Demo", status=JobStatus.RUNNING,
              progress=10, message="Working", session_id=session_id, seq=seq, created_at=iso(utcnow()))
    store.write(job, Guard.RECORD)
    return job


def _seed(app, user) -> tuple[object, dict[str, Job]]:
    store = app.extensions["epm.jobs"].store
    old = int(time.time() * 1000) - 10_000  # written well before the version's margin
    jobs = {job_id: _saved(store, str(user.id), job_id, session, old + n)
            for n, (job_id, session) in enumerate([("a", "s1"), ("b", "s1"), ("c", "s2")])}
    return store, jobs


def test_a_poller_gets_304_without_a_database_statement_until_a_job_it_shows_changes(app, auth_client, user):
    store, jobs = _seed(app, user)
    first = auth_client.get("/api/background-jobs?since=0")
    assert first.status_code == 200 and {job["id"] for job in first.json["jobs"]} == {"a", "b", "c"}
    version = first.json["version"]
    assert version == jobs["c"].seq
    statements = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *a, **k: statements.append(a[2]))
    unchanged = auth_client.get(f"/api/background-jobs?since={version}")
    assert unchanged.status_code == 304 and statements == []

    moved = jobs["b"]
    moved.progress, moved.seq = 50, next_seq(moved.seq)
    store.save_progress(moved)
    diff = auth_client.get(f"/api/background-jobs?since={version}")
    assert diff.status_code == 200
    assert [(job["id"], job["progress"]) for job in diff.json["jobs"]] == [("b", 50)]
    assert diff.json["since"] == version and version <= diff.json["version"] <= moved.seq


def test_a_change_outside_the_polled_session_is_not_a_change_of_that_list(app, auth_client, user):
    store, jobs = _seed(app, user)
    version = auth_client.get("/api/background-jobs?since=0&session_id=s1").json["version"]
    other = jobs["c"]
    other.progress, other.seq = 80, next_seq(other.seq)
    store.save_progress(other)
    assert auth_client.get(f"/api/background-jobs?since={version}&session_id=s1").status_code == 304
    assert auth_client.get(f"/api/background-jobs?since={version}").json["jobs"][0]["id"] == "c"


def test_since_must_be_a_version_and_cannot_be_combined_with_a_status_filter(auth_client):
    for query, field in (("since=soon", "since"), ("since=5&status=running", "status")):
        response = auth_client.get(f"/api/background-jobs?{query}")
        assert response.status_code == 422, query
        assert response.json["error"]["code"] == "validation_failed"
        assert field in response.json["error"]["fields"], response.json


def test_the_full_list_names_the_version_to_poll_from(app, auth_client, user):
    _seed(app, user)
    response = auth_client.get("/api/background-jobs")
    assert response.status_code == 200 and isinstance(response.json["version"], int)
