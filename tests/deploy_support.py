"""The documented deployment for tests: docs/deploy.md's nginx block run as written, with TLS, in front of instances.

nginx runs unprivileged (as ``nobody`` when the tests run as root) with its prefix, configuration, pid,
logs and temporary files in a temporary directory, on a free loopback port, with a self-signed
certificate that openssl makes for :data:`HOST`. The block is read from docs/deploy.md each time, and only
the upstream addresses, the listen address, the server name and the certificate paths are replaced, so
the documentation cannot drift from what is tested.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, StreamCounter, _delete_keys, _skip_reason
from tests.support import ROOT, LiveServer, PostgresDatabase, free_port, real_backends, upgrade_database, wait_for

HOST = "epm.test"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def skip_reason() -> str | None:
    """Why the deployment test cannot run here (None when it can)."""
    if (reason := _skip_reason()) is not None:
        return f"the deployment test drives Chromium: {reason}"
    if _nginx() is None:
        return "the deployment test needs nginx (Debian package nginx-light; .ci/run installs it)"
    if shutil.which("openssl") is None:
        return "the deployment test needs openssl to make its certificate (Debian package openssl)"
    return None


def _nginx() -> str | None:
    """nginx's path: on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def documented_nginx_block() -> str:
    """The fenced ```nginx block of the "## nginx" section of docs/deploy.md, exactly as documented."""
    text = DEPLOY_DOC.read_text()
    match = re.search(r"^## nginx\n.*?^```nginx\n(.*?)^```", text, re.S | re.M)
    assert match, "docs/deploy.md has no ```nginx block in its '## nginx' section"
    return match.group(1)


def site_config(upstreams: list[str], port: int, cert: Path, key: Path) -> str:
    """The documented block with this test's addresses: each replacement must match exactly once."""
    block = documented_nginx_block()
    documented_servers = re.findall(r"^ *server \d+\.\d+\.\d+\.\d+:\d+;\n", block, re.M)
    assert len(documented_servers) == 2, f"expected the two documented upstream servers, found {documented_servers}"
    replacements = [
        ("".join(documented_servers), "".join(f"    server {address};\n" for address in upstreams)),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
        ("server_name epm.example.com;", f"server_name {HOST};"),
        ("/etc/nginx/tls/epm.crt", str(cert)),
        ("/etc/nginx/tls/epm.key", str(key)),
    ]
    for documented, ours in replacements:
        assert block.count(documented) == 1, f"docs/deploy.md's nginx block no longer has {documented!r} once"
        block = block.replace(documented, ours)
    return block


def self_signed_certificate(directory: Path, host: str = HOST) -> tuple[Path, Path]:
    """A certificate and key for ``host``, valid for a day (an EC key: quick to make)."""
    cert, key = directory / "epm.crt", directory / "epm.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


class Nginx:
    """nginx with docs/deploy.md's block in front of ``upstreams``, on ``https://HOST:<port>`` (127.0.0.1)."""

    def __init__(self, upstreams: list[str]):
        self.binary = _nginx()
        self.dir = Path(tempfile.mkdtemp(prefix="epm-nginx-"))
        self.port = free_port()
        self.url = f"https://{HOST}:{self.port}"
        self.cert, self.key = self_signed_certificate(self.dir)
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        site = site_config(upstreams, self.port, self.cert, self.key)
        temp = "\n".join(f"    {kind}_temp_path {self.dir / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (self.dir / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {self.dir / 'nginx.pid'};
error_log {self.error_log} info;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$remote_addr "$request" $status $body_bytes_sent $request_time '
                        'upstream=$upstream_addr $upstream_status $server_protocol';
    access_log {self.access_log} upstream;
{temp}
{site}
}}
""")
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        drop = {}
        if os.geteuid() == 0:  # never run the proxy as root: the files are nobody's, and so is nginx
            for path in (self.dir, *self.dir.iterdir()):
                shutil.chown(path, "nobody", "nogroup")
            drop = {"user": "nobody", "group": "nogroup", "extra_groups": []}
        self.process = subprocess.Popen([self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                         "-e", str(self.error_log)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True, **drop)

        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited ({self.process.returncode}): {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
            return False

        wait_for(listening, 15, 0.05, "nginx to listen")
        return self

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.error_log.read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nginx's fast shutdown: the test is over
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def sse_streams(server_url: str) -> int:
    """How many event streams the server at ``server_url`` holds now (its ``epm_sse_streams`` gauge)."""
    text = httpx.get(server_url + "/metrics", timeout=5).text
    match = re.search(r"^epm_sse_streams(?:\{[^}]*\})? ([0-9.e+-]+)$", text, re.M)
    assert match, "no epm_sse_streams in /metrics"
    return int(float(match.group(1)))


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` of ``values`` at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Deployment:
    """Two instances (one gevent worker each) sharing real Redis and PostgreSQL, with nginx in front.

    The instances trust the proxy's ``X-Forwarded-Proto`` through gunicorn's ``FORWARDED_ALLOW_IPS``
    (127.0.0.1: nginx runs on this host), as docs/deploy.md sets them up.
    """

    STAGE_SECONDS = 0.2  # an EPM generation (9 stages) lasts about 2 s

    def __init__(self) -> None:
        redis_url, database_url = real_backends()
        self.database = PostgresDatabase(database_url)
        self.prefix = f"epmdeploy:{uuid.uuid4().hex[:8]}:"
        self.instances: list[LiveServer] = []
        self.nginx: Nginx | None = None
        try:
            upgrade_database(self.database.url)
            env = {"SECRET_KEY": "deploy-test", "REDIS_URL": redis_url, "DATABASE_URL": self.database.url,
                   "EPM_KEY_PREFIX": self.prefix, "EPM_STAGE_SECONDS": str(self.STAGE_SECONDS),
                   "EPM_SSE_HEARTBEAT": "1", "EPM_PROGRESS_INTERVAL": "0.01", "EPM_MAINTENANCE_INTERVAL": "1",
                   "LOG_LEVEL": "WARNING", "FORWARDED_ALLOW_IPS": "127.0.0.1"}
            self.instances = [LiveServer(env, workers=1), LiveServer(env, workers=1)]
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda server: server.start(), self.instances))
            self.nginx = Nginx([f"127.0.0.1:{server.port}" for server in self.instances]).start()
        except BaseException:
            self.close()
            raise

    def streams_by_instance(self) -> list[int]:
        """The event streams each instance holds now (0 for a stopped one)."""
        return [sse_streams(server.url) if server.process.poll() is None else 0 for server in self.instances]

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        with ThreadPoolExecutor(2) as pool:  # a quick stop, both at once: the tests leave no job running
            list(pool.map(lambda server: server.stop(signal.SIGQUIT), self.instances))
        self.database.drop()
        _delete_keys(self.prefix)


class ChromiumThread:
    """Chromium that resolves HOST to 127.0.0.1, driven from a thread of its own: ``run(function, *args)``.

    The browser tests keep a sync Playwright on the main thread for the whole session, and a second one
    cannot start there; Playwright's sync API is per thread, so this one lives on its own.
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="deploy-chromium")
        self._playwright: Any = None
        try:
            self.browser = self.run(self._launch)
        except BaseException:
            self.close()
            raise

    def _launch(self) -> Any:
        from playwright.sync_api import expect, sync_playwright

        expect.set_options(timeout=15_000)  # as the browser tests have it: a busy machine is slow to paint
        self._playwright = sync_playwright().start()
        return self._playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {HOST} 127.0.0.1"])

    def run(self, function: Any, *args: Any) -> Any:
        """Call ``function(*args)`` on Chromium's thread and return (or raise) what it does."""
        return self._thread.submit(function, *args).result()

    def close(self) -> None:
        def stop() -> None:
            if getattr(self, "browser", None) is not None:
                self.browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        try:
            self.run(stop)
        finally:
            self._thread.shutdown()


# -- in the browser -------------------------------------------------------------------------------------
# A page's EventSource, recorded in ``window.__epmStream``: each connect, open, error and job event with
# its arrival time (ms since the epoch, the clock a job's seq is written with).
RECORD_STREAM = """
(() => {
  const Native = window.EventSource;
  const log = (window.__epmStream = []);
  const note = (kind, extra) => log.push({ t: Date.now(), kind, ...extra });
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      note("connect");
      this.addEventListener("open", () => note("open"));
      this.addEventListener("error", () => note("error"));
      this.addEventListener("job", (event) => {
        const job = JSON.parse(event.data);
        note("job", { id: job.id, seq: job.seq, status: job.status });
      });
    }
  };
})();
"""
# Every change of a job that jobs.js applies on the page (from the stream, a relay or a poll), in
# ``window.__epmSeen``.
RECORD_STATE = """async () => {
  const jobs = await import("/static/js/jobs.js");
  window.__epmSeen = [];
  jobs.subscribe(({ changed }) => {
    for (const { job } of changed) window.__epmSeen.push({ t: Date.now(), id: job.id, status: job.status });
  });
}"""
# Whether jobs.js in the page holds job ``id`` as finished and acknowledged (asked the server to announce it).
ACKNOWLEDGED = """async (id) => {
  const jobs = await import("/static/js/jobs.js");
  const job = jobs.get(id);
  return Boolean(job && job.terminal && job.acknowledged);
}"""


class InFlight(StreamCounter):
    """Counts a browser context's requests to URLs ending in ``suffix`` that are not answered yet (``open``)."""

    def __init__(self, context: Any, suffix: str):
        self.suffix = suffix
        super().__init__(context)

    def _request(self, request: Any) -> None:
        if request.url.endswith(self.suffix):
            self.started += 1
            self._open.add(request)


def longest_gap(times: list[float]) -> float:
    return max((later - earlier for earlier, later in zip(times, times[1:], strict=False)), default=0.0)
