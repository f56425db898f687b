"""What the benchmarks in ``scripts/`` share: the backends of a run, a real gunicorn server, process
figures read from /proc, a keep-alive HTTP client, statistics, and the table and JSON line they print.

A run never touches data it did not create: on real backends it makes its own PostgreSQL database and
its own Redis key prefix, and removes both at the end; on the embedded default it uses a temporary
SQLite file (and fakeredis, which lives inside each process).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET_KEY = "bench-" + uuid.uuid4().hex
#: one password hash for every benchmark user: hashing is deliberately slow and not what is measured
PASSWORD = "bench-password"
LIST_PATH = "/api/background-jobs"


# -- backends ----------------------------------------------------------------------------------------
class Backends:
    """The Redis and database of one run: ``REDIS_URL``/``DATABASE_URL`` when set, else the embedded default.

    On real backends a fresh database (migrated like a release) and a unique key prefix are made for the
    run and removed by ``close``; on the embedded default a migrated SQLite file in a temporary folder.
    """

    def __init__(self, name: str, own_redis: bool = False):
        """``own_redis``: on real backends, run on a redis-server of the run's own (a free port, no
        persistence) rather than ``REDIS_URL``'s, so that its CPU is the run's alone and can be counted."""
        self.redis_url = os.environ.get("REDIS_URL") or None
        base_db = os.environ.get("DATABASE_URL") or None
        self.real = bool(self.redis_url and base_db)
        self.own_redis = OwnRedis() if own_redis and self.real and OwnRedis.available() else None
        self.prefix = f"{name}:{uuid.uuid4().hex[:8]}:"
        self._tmp = tempfile.mkdtemp(prefix=f"{name}-")
        self._admin_url: str | None = None
        if self.real:
            parts = urlsplit(base_db)
            self.db_name = f"{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            self._admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
            self.database_url = urlunsplit(parts._replace(path=f"/{self.db_name}"))
        else:
            self.redis_url = None
            self.db_name = None
            self.database_url = f"sqlite:///{self._tmp}/epm.sqlite"

    @property
    def label(self) -> str:
        if not self.real:
            return "embedded (fakeredis + SQLite)"
        return "real Redis (a server of the run's own) + PostgreSQL" if self.own_redis else "real Redis + PostgreSQL"

    def redis_pids(self) -> list[int]:
        """The Redis server's process when it is the run's own (its CPU can then be counted), else none."""
        return [self.own_redis.process.pid] if self.own_redis and self.own_redis.process else []

    @property
    def admin_url(self) -> str | None:
        """The server's maintenance database (for PostgreSQL's own views), not the run's."""
        return self._admin_url

    def open(self, root: Path = ROOT) -> Backends:
        """Create the run's database and migrate it with ``root``'s migrations (a baseline's own)."""
        if self.own_redis:
            self.redis_url = self.own_redis.start().url
        if self.real:
            import psycopg

            with psycopg.connect(self._admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
        env = {**os.environ, "DATABASE_URL": self.database_url, "EPM_MAINTENANCE": "0", "LOG_LEVEL": "WARNING"}
        env["PYTHONPATH"] = str(root)
        subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=root, env=env, check=True,
                       capture_output=True)
        return self

    def close(self) -> None:
        if self.real:
            import psycopg
            import redis

            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
            client.close()
            with psycopg.connect(self._admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if self.own_redis:
            self.own_redis.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Backends:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def app_config(self, **overrides: Any) -> dict[str, Any]:
        """Config for an app in this process on the run's backends (no maintenance loop)."""
        from epm.config import database_uri

        config = {"SECRET_KEY": SECRET_KEY, "SECRET_KEY_GENERATED": False, "REDIS_URL": self.redis_url,
                  "SQLALCHEMY_DATABASE_URI": database_uri(self.database_url), "EPM_KEY_PREFIX": self.prefix,
                  "EPM_MAINTENANCE": False, "LOG_LEVEL": "WARNING", "EPM_DEMO": True,
                  "RATELIMIT_ENABLED": False}
        config.update(overrides)
        return config

    def app(self, **overrides: Any):
        from epm import create_app

        return create_app(self.app_config(**overrides))

    def server_env(self, **overrides: str) -> dict[str, str]:
        env = {"SECRET_KEY": SECRET_KEY, "REDIS_URL": self.redis_url or "", "DATABASE_URL": self.database_url,
               "EPM_KEY_PREFIX": self.prefix, "LOG_LEVEL": "WARNING", "EPM_DEMO": "1", "EPM_RATE_LIMITS": "0"}
        env.update(overrides)
        return env

    def db_transactions(self) -> int | None:
        """Transactions PostgreSQL counted in the run's database (None on SQLite).

        PostgreSQL's own statistics, so they include the server's work; a backend reports them at
        most once a second, so a window of several seconds is needed for a rate.
        """
        if not self.real:
            return None
        import psycopg

        # Asked from the admin database so that asking is not counted in the run's database.
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                               (self.db_name,)).fetchone()
        return int(row[0]) if row else None


class OwnRedis:
    """A redis-server of the run's own on a free port, without persistence, stopped at the end of the run."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="bench-redis-")

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> OwnRedis:
        import redis

        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir, "--maxclients", "30000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


def create_users(app, count: int, tag: str) -> list[int]:
    """Insert ``count`` users (one shared password hash) and return their ids."""
    from epm.extensions import db
    from epm.models import User

    with app.app_context():
        probe = User(username="probe")
        probe.set_password(PASSWORD)
        users = [User(username=f"{tag}{index:05d}", password_hash=probe.password_hash) for index in range(count)]
        db.session.add_all(users)
        db.session.commit()
        ids = [user.id for user in users]
        db.session.remove()
    return ids


def session_cookie(app, user_id: int) -> str:
    """The session cookie of a signed-in user, as Flask-Login's ``login_user`` leaves it.

    Signing in through ``/login`` costs a password hash per user, which is not what is measured.
    """
    from epm.web.auth import AUTH_KEY, session_token_for

    serializer = app.session_interface.get_signing_serializer(app)
    token = session_token_for(app.config["SECRET_KEY"], user_id, 0)  # a new account: generation 0
    return serializer.dumps({"_user_id": str(user_id), "_fresh": False, AUTH_KEY: token})


def csrf_session(base_url: str, cookie: str) -> tuple[str, str]:
    """Open a page as the signed-in user: return the session cookie holding a CSRF token, and the token."""
    import re

    import httpx

    # Every page carries the token; the sign-in page is the one that exists in every build of the app.
    response = httpx.get(base_url + "/login", cookies={"session": cookie}, timeout=30)
    response.raise_for_status()
    match = re.search(r'name="csrf-token" content="([^"]+)"', response.text)
    if not match:
        raise RuntimeError("the sign-in page has no csrf-token meta tag")
    return response.cookies.get("session") or cookie, match.group(1)


# -- a real server -----------------------------------------------------------------------------------
class Server:
    """gunicorn with gevent workers, started from gunicorn.conf.py like the tests' live servers."""

    def __init__(self, env: dict[str, str], workers: int, command: list[str] | None = None, root: Path = ROOT):
        """``command``: another WSGI app's gunicorn command line (a peer's), bound to ``self.port``;
        ``root``: the checkout to run (a baseline's own code)."""
        self.root = root
        self.port = free_port()
        self.command = command
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": str(workers),
                    "EPM_GRACEFUL_TIMEOUT": "3", **env}
        self.log_path = Path(tempfile.gettempdir()) / f"bench-gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Server:
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop)
        command = self.command or ["-c", "gunicorn.conf.py", "wsgi:app"]
        if self.command:
            command = ["-b", f"127.0.0.1:{self.port}", "-w", str(self.workers), *command]
        self.process = subprocess.Popen([str(BIN / "gunicorn"), *command], cwd=self.root,
                                        env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()}")
            if len(self.worker_pids()) >= self.workers and _answers(self.port):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not answer within {timeout}s: {self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def worker_pids(self) -> list[int]:
        return children(self.process.pid) if self.process else []

    def pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: bench\r\n\r\n")
            return sock.recv(64).split(b" ", 2)[1:2] == [b"200"]
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by what it starts) towards ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- process figures from /proc ----------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(int(child) for child in task.read_text().split())
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time the processes used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class CpuMeter:
    """CPU use of some processes over a window, in percent of one core."""

    def __init__(self, pids: Callable[[], Iterable[int]]):
        self._pids = pids
        self.start()

    def start(self) -> None:
        self._cpu = cpu_seconds(self._pids())
        self._wall = time.monotonic()

    def percent(self) -> float:
        return 100 * (cpu_seconds(self._pids()) - self._cpu) / max(1e-9, time.monotonic() - self._wall)


# -- a keep-alive HTTP/1.1 client --------------------------------------------------------------------
class HttpConnection:
    """One keep-alive connection that sends a request and reads the whole response (Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, headers = parse_head(head)
        length = int(headers.get(b"content-length", b"0"))
        body = await self.reader.readexactly(length) if length else b""
        return status, headers, body

    def close(self) -> None:
        self.writer.close()


def parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def get_request(path: str, cookie: str, extra: dict[str, str] | None = None) -> bytes:
    """A GET with the session cookie; ``extra`` headers replace the defaults of the same name (an event
    stream's client sends ``Accept: text/event-stream`` as an EventSource does, not a second Accept)."""
    headers = {"Host": "127.0.0.1", "Cookie": f"session={cookie}", "Accept": "*/*", **(extra or {})}
    lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- conditions of a run -----------------------------------------------------------------------------
def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages and its CPU count, to print beside the figures."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def versions(*distributions: str) -> dict[str, str]:
    """The installed version of each distribution ("not installed" for those missing)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in distributions:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


_UNRELATED = {"rows": [{"id": index, "name": f"row {index}", "tags": ["a", "b", "c"], "score": index * 0.5}
                       for index in range(20)]}


def unrelated_work() -> int:
    """About a hundred microseconds of other work (JSON, hashing, sorting), run between measured calls so
    that each call starts with caches and branch predictors as a real request leaves them, not warm."""
    import hashlib

    text = json.dumps(_UNRELATED)
    digest = hashlib.sha256(text.encode() * 8).digest()
    return len(json.loads(text)["rows"]) + digest[0]


# -- statistics and output ---------------------------------------------------------------------------
def percentile(values: Sequence[float], pct: float) -> float | None:
    """The ``pct`` percentile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def timed_per_call(fn: Callable[[int], object], calls: int) -> float:
    """Microseconds per call of ``fn(i)`` over ``calls`` calls."""
    start = time.perf_counter()
    for index in range(calls):
        fn(index)
    return (time.perf_counter() - start) / calls * 1e6


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[fmt(cell) for cell in row] for row in rows]
    widths = [max(len(row[col]) for row in cells) for col in range(len(headers))]
    print(f"\n{title}")
    print("| " + " | ".join(cell.ljust(width) for cell, width in zip(cells[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(cell.ljust(width) if col == 0 else cell.rjust(width)
                                for col, (cell, width) in enumerate(zip(row, widths, strict=True))) + " |")


def emit(figures: dict[str, Any]) -> None:
    """The benchmark's last line: its figures as one JSON object."""
    print(json.dumps(figures, separators=(",", ":"), default=_json_default), flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    return str(value)


def rounded(figures: dict[str, Any], digits: int = 3) -> dict[str, Any]:
    return {key: round(value, digits) if isinstance(value, float) else value for key, value in figures.items()}


@contextmanager
def statement_counter(engine) -> Iterator[list[str]]:
    """Collect every SQL statement ``engine`` sends while the block runs."""
    from sqlalchemy import event

    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def list_statements(app, cookie: str, requests: int = 20) -> dict[str, Any]:
    """Statements the list endpoint sends per 200 and per 304 (``If-None-Match``), counted in this process
    on the app's engine; raises if an answer is not the one expected. Returns the counts, the ETag and
    the distinct statements seen."""
    from epm.extensions import db

    client = app.test_client()
    client.set_cookie("session", cookie)
    with app.app_context():
        engine = db.engine
    first = client.get(LIST_PATH)
    if first.status_code != 200:
        raise RuntimeError(f"GET {LIST_PATH} answered {first.status_code}: {first.data[:300]!r}")
    etag = first.headers["ETag"]
    counts: dict[str, Any] = {"etag": etag}
    for kind, headers in (("200", {}), ("304", {"If-None-Match": etag})):
        with statement_counter(engine) as seen:
            for _ in range(requests):
                response = client.get(LIST_PATH, headers=headers)
                if response.status_code != int(kind):
                    raise RuntimeError(f"expected {kind}, got {response.status_code}: {response.data[:300]!r}")
        counts[kind] = len(seen) / requests
        counts[kind + "_statements"] = sorted(set(seen))
    return counts


def is_write(statement: str) -> bool:
    return statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}
