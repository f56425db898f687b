"""Logs with ``LOG_FORMAT=json`` on a real gunicorn server: every line one JSON object, a job's lines carrying
its id, type and user, lines logged in a request carrying the request id (the proxy's ``X-Request-ID``)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support import Browserish, LiveServer, wait_for

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("logs", LOG_FORMAT="json", LOG_LEVEL="INFO", EPM_ACCESS_LOG="-")


def log_lines(server: LiveServer) -> list[dict]:
    """Every line the server wrote so far, each parsed as JSON (a line that is not JSON fails the test)."""
    lines = []
    for number, line in enumerate(server.log_path.read_text().splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"line {number} of the server's output is not JSON: {line!r}")
    return lines


def start(user: Browserish, request_id: str, **params) -> dict:
    response = user.http.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": params},
                              headers={"X-CSRFToken": user.csrf, "X-Request-ID": request_id})
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == request_id, "the request id is echoed"
    return response.json()["job"]


def lines_of(server: LiveServer, job_id: str, last: str) -> list[dict]:
    return wait_for(lambda: (found := [line for line in log_lines(server) if line.get("job_id") == job_id])
                    and any(last in line["message"] for line in found) and found, 10, 0.05,
                    f"the log lines of job {job_id}")


def test_a_jobs_lines_are_json_with_its_ids_and_the_request_id_where_it_was_started(server):
    user = Browserish(server.url).signup()
    try:
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        job = start(user, request_id, steps=2)
        lines = lines_of(server, job["id"], f"job {job['id']} completed")
    finally:
        user.close()
    ids = {"job_id": job["id"], "job_type": "demo_countdown", "user_id": job["user_id"]}
    for line in lines:
        assert {name: line.get(name) for name in ids} == ids, line
        assert {"time", "level", "logger", "message", "pid"} <= set(line)
        assert line["time"].endswith("Z")
    messages = [line["message"] for line in lines]
    assert messages[0].startswith(f"job {job['id']} created (demo_countdown")
    assert f"job {job['id']} started (demo_countdown)" in messages and messages[-1] == f"job {job['id']} completed"
    created = lines[0]
    assert created["request_id"] == request_id, "logged in the request that started the job"
    in_request = [line for line in log_lines(server) if line.get("request_id") == request_id]
    assert [line["logger"] for line in in_request] == ["epm.jobs", "gunicorn.access"]
    assert '"POST /api/background-jobs HTTP/1.1" 202' in in_request[1]["message"], "its access line has the same id"


def test_a_crash_is_one_json_line_with_the_traceback_and_the_job_ids(server):
    user = Browserish(server.url).signup()
    try:
        job = start(user, f"req-{uuid.uuid4().hex[:12]}", steps=3, crash_at=2)
        lines = lines_of(server, job["id"], f"job {job['id']} failed")
    finally:
        user.close()
    crash = next(line for line in lines if line["level"] == "error")
    assert crash["message"] == f"job {job['id']} (demo_countdown) raised"
    assert crash["traceback"].startswith("Traceback") and "RuntimeError: demo crash at step 2" in crash["traceback"]
    assert (crash["job_type"], crash["user_id"]) == ("demo_countdown", job["user_id"])
    assert "request_id" not in crash, "the job runs after its request ended"
