"""Issue 15's reproductions against a real gunicorn server (real Redis and PostgreSQL when configured)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from tests.support import Browserish, LiveServer, serve_http

pytestmark = pytest.mark.live


class _Site(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/good":
            body = b"<title>Bike repair in Utrecht</title><h1>Repairs</h1><p>Cyclists want fast repairs.</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(302)
            self.send_header("Location", "javascript:alert(1)" if self.path == "/to-js" else "data:text/html,x")
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with serve_http(_Site) as url:
        yield url


@pytest.fixture(scope="module")
def server(start_server) -> LiveServer:
    return start_server("hostile", EPM_RESEARCH_ALLOW_PRIVATE="1", EPM_RATE_LIMITS="1",
                        EPM_LIMIT_SIGNIN="5 per minute", EPM_LIMIT_SIGNUP="50 per minute",
                        EPM_LIMIT_START="3 per minute")


@pytest.fixture
def user(server) -> Iterator[Browserish]:
    browser = Browserish(server.url).signup()
    yield browser
    browser.close()


def _backend_errors(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("epm_backend_errors_total{"))


def test_bad_input_answers_4xx_and_never_ticks_the_outage_metric(server, user):
    before = _backend_errors(server)
    assert user.get("/api/sessions/2147483648").status_code == 404
    assert user.get("/programs/99999999999999999999").status_code == 404
    assert user.get("/api/background-jobs/%00").status_code == 400
    nul_name = user.post("/api/sessions", json={"name": "a\u0000b"})
    assert nul_name.status_code == 400 and nul_name.json()["error"]["code"] == "invalid_characters"
    surrogate = user.http.post("/api/sessions", content=b'{"name": "a\\ud800b"}',
                               headers={"X-CSRFToken": user.csrf, "Content-Type": "application/json"})
    assert surrogate.status_code == 400 and surrogate.json()["error"]["code"] == "invalid_characters"
    deep = user.http.post("/api/sessions", content=b"[" * 100_000 + b"]" * 100_000,
                          headers={"X-CSRFToken": user.csrf, "Content-Type": "application/json"})
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "too_deeply_nested"
    nul_login = httpx.post(server.url + "/login", data={"username": "ab\x00c", "password": "x"}, timeout=10)
    assert nul_login.status_code == 400
    huge = user.post("/api/background-jobs", json={"job_type": "demo_countdown",
                                                   "params": {"steps": 10_000, "cpu_ms": 10_000}})
    assert huge.status_code == 422
    assert _backend_errors(server) == before


def test_a_100_mb_sign_in_is_refused_before_it_is_read(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 104857600\r\n\r\n" + b"a" * 65536)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 10  # 64 KB of 100 MB were sent: the rest was never awaited


def test_security_headers_on_pages_json_and_static_files(server):
    for path in ("/login", "/api/operations", "/static/css/app.css", "/nowhere"):
        headers = httpx.get(server.url + path, timeout=10).headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"


def test_a_copied_cookie_stops_working_at_sign_out(server, user):
    thief = httpx.Client(base_url=server.url, cookies=dict(user.http.cookies), timeout=10)
    assert thief.get("/api/background-jobs").status_code == 200
    page = user.get("/sessions").text
    assert user.http.post("/logout", data={"csrf_token": user.csrf}).status_code == 200
    assert "Sign in" in page or page
    assert thief.get("/api/background-jobs").status_code == 401
    assert thief.get("/sessions", follow_redirects=False).status_code == 302
    thief.close()


def test_wrong_passwords_are_limited_with_retry_after(server, user):
    attacker = Browserish(server.url)
    attacker._refresh_csrf("/login")

    def attempt(password: str) -> httpx.Response:
        return attacker.http.post("/login", data={"username": user.username, "password": password,
                                                  "csrf_token": attacker.csrf})

    statuses = [attempt(f"wrong{n}").status_code for n in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    right = attempt(user.password)
    assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
    assert "Try again in" in right.text
    attacker.close()


def test_job_starts_are_limited_per_account(server, user):
    answers = [user.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {"steps": 1}})
               for _ in range(4)]
    statuses = [answer.status_code for answer in answers]
    # 3 a minute per account and per address (earlier tests here started from this address too).
    assert statuses[0] == 202 and statuses[-1] == 429 and statuses.count(202) <= 3
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) > 0


def test_a_redirect_to_javascript_fails_that_source_and_the_others_still_count(server, user, site):
    created = user.post("/api/sessions", json={"name": "Research", "source_urls": [
        f"{site}/good", f"{site}/to-js", f"{site}/to-data"]})
    assert created.status_code == 201, created.text
    started = user.post(f"/api/sessions/{created.json()['session']['id']}/web_research")
    assert started.status_code == 202, started.text
    job = user.wait_finished(started.json()["job"]["id"], timeout=30)
    assert job["status"] == "completed", json.dumps(job)
    report = user.get(job["result"]["url"])
    assert report.status_code == 200
    assert "Bike repair in Utrecht" in report.text
    assert "not a web page" in report.text
