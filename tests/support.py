"""Test support that is not a fixture: waiting for a condition, real servers, SSE reading."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def recorded_row(app, job_id: str, status: str = "completed", timeout: float = 10.0) -> Any:
    """Wait until the job's ``background_jobs`` row says ``status``; return the row (its columns loaded)."""
    from epm.extensions import db
    from epm.jobs.models import BackgroundJob

    def written() -> Any:
        db.session.expire_all()
        row = db.session.get(BackgroundJob, job_id)
        return row if row is not None and row.status == status else None

    with app.app_context():
        return wait_for(written, timeout, message=f"the {status} row of job {job_id}")


def real_backends() -> tuple[str, str] | None:
    redis_url, database_url = os.environ.get("REDIS_URL"), os.environ.get("DATABASE_URL")
    return (redis_url, database_url) if redis_url and database_url else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresDatabase:
    """A throw-away PostgreSQL database for one test run, so parallel runs never meet."""

    def __init__(self, base_url: str):
        import psycopg

        self.name = f"epm_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        parts = urlsplit(base_url)
        self._admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def upgrade_database(url: str) -> None:
    """Apply the migrations to ``url`` the way a release does (``flask db upgrade``)."""
    env = {**os.environ, "DATABASE_URL": url, "EPM_MAINTENANCE": "0", "LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, capture_output=True)


class LiveServer:
    """A real gunicorn server with gevent workers, started from gunicorn.conf.py."""

    def __init__(self, env: dict[str, str], workers: int = 1, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": str(workers),
                    "EPM_GRACEFUL_TIMEOUT": "5", **env}
        self.log_path = Path(os.environ.get("EPM_TEST_LOGS", "/tmp")) / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None

    # A bound on waiting, not an expected time: quiet, a server answers within 2 s, but CI runs the suite
    # beside two CPU hogs and a second pytest process (pip building a venv, Chromium), where one took over
    # 20 s. A live server that never comes up still fails, with its log and the load average in the message.
    BOOT_TIMEOUT = 90.0

    def start(self, timeout: float = BOOT_TIMEOUT) -> LiveServer:
        gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen([gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=self.env,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited: {self.log()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(up, timeout, 0.1, "gunicorn to answer /healthz")
        except AssertionError as error:
            self._kill()
            raise AssertionError(f"{error} (load average {os.getloadavg()}); its log:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
            self._log.close()
        except subprocess.TimeoutExpired:
            self._kill()

    def _kill(self) -> None:
        """SIGKILL to the master and any worker it forked (its own process group); then its log is closed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Browserish:
    """An HTTP client that signs up and keeps its cookies and CSRF token, like a browser session."""

    def __init__(self, base_url: str, username: str | None = None, password: str = "password123"):
        self.http = httpx.Client(base_url=base_url, timeout=10, follow_redirects=True)
        self.username = username or f"user{uuid.uuid4().hex[:8]}"
        self.password = password
        self.csrf = ""

    def signup(self) -> Browserish:
        return self._send_account_form("/signup", then="/login")

    def login(self) -> Browserish:
        """Sign in to an existing account (``username``/``password``), as another browser session of it."""
        return self._send_account_form("/login", then="/")

    def _send_account_form(self, path: str, then: str) -> Browserish:
        """Post ``username``/``password`` to the form at ``path`` as a browser does (its CSRF token first);
        then take the token of the page at ``then``."""
        self._refresh_csrf(path)
        response = self.http.post(path, data={"username": self.username, "password": self.password,
                                              "csrf_token": self.csrf})
        assert response.status_code == 200, response.text[:500]
        self._refresh_csrf(then)
        return self

    def _refresh_csrf(self, path: str) -> None:
        page = self.http.get(path).text
        match = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert match, "no csrf-token meta tag"
        self.csrf = match.group(1)

    def post(self, path: str, json: Any = None) -> httpx.Response:
        return self.http.post(path, json=json, headers={"X-CSRFToken": self.csrf})

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def wait_finished(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the job until it is terminal; return its last state (the test fails after ``timeout``)."""

        def finished() -> dict[str, Any] | None:
            job = self.get(f"/api/background-jobs/{job_id}").json()["job"]
            return job if job["terminal"] else None

        return wait_for(finished, timeout=timeout, interval=0.2, message=f"job {job_id} to finish")

    def start_demo(self, **params: Any) -> dict[str, Any]:
        response = self.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": params})
        assert response.status_code == 202, response.text
        return response.json()["job"]

    def events(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> Iterator[dict]:
        """Yield each SSE event of ``path`` as ``{"id", "event", "data"}``; comments as ``{"comment"}``."""
        import json as json_module

        with self.http.stream("GET", path, headers=headers or {}, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            event: dict[str, Any] = {}
            for line in response.iter_lines():
                if line == "":
                    if event:
                        if "data" in event:
                            event["data"] = json_module.loads(event["data"])
                        yield event
                    event = {}
                elif line.startswith(":"):
                    yield {"comment": line[1:].strip()}
                else:
                    name, _, value = line.partition(":")
                    event[name] = value[1:] if value.startswith(" ") else value

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Browserish:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on a local HTTP server (threads, quiet) until the block ends; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def pages_handler(pages: dict[str, bytes]) -> type[BaseHTTPRequestHandler]:
    """A handler answering each of ``pages`` (path -> HTML) with 200 and anything else with 404."""

    class Pages(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
            return None

        def do_GET(self) -> None:  # noqa: N802  (the name http.server looks for)
            body = pages.get(self.path)
            status, body = (200, body) if body is not None else (404, b"<html><body>Not found</body></html>")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Pages
