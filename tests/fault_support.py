"""Servers of our own for fault tests: a redis-server and a PostgreSQL cluster we may stop, restart and flush.

The shared Redis and PostgreSQL of the machine are never touched: each fault test starts its own on a
free port, in a temporary directory, and removes it afterwards. Both skip the test with a clear message
when the server binaries are not installed (Debian packages ``redis-server`` and ``postgresql``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from epm.jobs.store import Guard
from tests.support import ROOT, Browserish, LiveServer, free_port, upgrade_database, wait_for

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class RedisServer:
    """A throw-away redis-server without persistence: a restart loses its data, as a real crash would."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("fault tests need the redis-server binary (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, *extra: str) -> RedisServer:
        """Start it; ``extra`` are more command-line options (``--replicaof host port``)."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning",
             # A master writes a snapshot to sync a replica: into the temporary directory, never the worktree.
             "--dir", tempfile.gettempdir(), "--dbfilename", f"epm-test-{self.port}.rdb", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.ping, 10, 0.02, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2)

    def stop(self) -> None:
        """Kill the server (its data goes with it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        Path(tempfile.gettempdir(), f"epm-test-{self.port}.rdb").unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers, like a hung host."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


class PostgresServer:
    """A throw-away PostgreSQL cluster (initdb into a temporary directory) that a test may stop and start."""

    def __init__(self) -> None:
        bins = sorted(glob.glob(PG_BIN_GLOB))
        if not bins or not os.path.exists(os.path.join(bins[-1], "initdb")):
            pytest.skip("fault tests need PostgreSQL's server binaries (Debian package postgresql)")
        self.bin = bins[-1]
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="epm-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [os.path.join(self.bin, args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}\n{result.stderr}")

    def init(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        return self.start()

    def start(self) -> PostgresServer:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "-t", "30",
                  "start")
        return self

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when a database host goes down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped by the test
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    """Redis for high availability on loopback ports: a master, one replica and three sentinels.

    The sentinels call the master down after 1 s of silence and fail over to the replica.
    """

    MASTER_NAME = "epmtest"

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.dir = Path(tempfile.mkdtemp(prefix="epm-sentinel-"))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelCluster:
        self.master.start()
        self.replica.start("--replicaof", "127.0.0.1", str(self.master.port))
        for port in self.sentinel_ports:
            config = self.dir / f"sentinel-{port}.conf"
            config.write_text(f"port {port}\nbind 127.0.0.1\n"
                              f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                              f"sentinel down-after-milliseconds {self.MASTER_NAME} 1000\n"
                              f"sentinel failover-timeout {self.MASTER_NAME} 5000\n")
            self.sentinels.append(subprocess.Popen(
                [self.master.binary, str(config), "--sentinel", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(self._ready, 20, 0.1, "the sentinels to see the master, its replica and each other")
        return self

    def _ask(self, port: int, *command: str) -> Any:
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
            return client.execute_command(*command)

    def _ready(self) -> bool:
        try:
            with self.replica.client() as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for port in self.sentinel_ports:
                fields = self._ask(port, "SENTINEL", "MASTER", self.MASTER_NAME)  # parsed by redis-py
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                    return False
            return True
        except redis.RedisError:
            return False

    def master_port(self) -> int:
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1) as client:
            return int(client.sentinel_get_master_addr_by_name(self.MASTER_NAME)[1])

    def close(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(10)
        self.master.stop()
        self.replica.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Backends:
    """Our own Redis and PostgreSQL (with a migrated database) for one test module."""

    def __init__(self) -> None:
        self.redis = RedisServer()
        self.postgres = PostgresServer()
        self.redis.start()
        self.postgres.init()
        self.database_url = self.postgres.create_database("epm")
        upgrade_database(self.database_url)

    def env(self, **extra: str) -> dict[str, str]:
        """A live server's environment: these backends, a fresh key prefix, fast heartbeats and upkeep."""
        return {"REDIS_URL": self.redis.url, "DATABASE_URL": self.database_url, "SECRET_KEY": "faults",
                "EPM_KEY_PREFIX": f"epmfault:{uuid.uuid4().hex[:8]}:", "EPM_HEARTBEAT_TIMEOUT": "2",
                "EPM_MAINTENANCE_INTERVAL": "0.5", "EPM_SSE_HEARTBEAT": "0.5", "EPM_REDIS_TIMEOUT": "1",
                "LOG_LEVEL": "INFO", **extra}

    def rows(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The ``background_jobs`` rows of ``job_ids``, as an operator would read them."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            found = conn.execute("SELECT * FROM background_jobs WHERE id = ANY(%s)", (list(job_ids),)).fetchall()
        return {row["id"]: row for row in found}

    def live_job(self, env: dict[str, str], job_id: str) -> dict[str, str]:
        with self.redis.client() as client:
            return client.hgetall(f"{env['EPM_KEY_PREFIX']}job:{job_id}")

    def active_ids(self, env: dict[str, str]) -> list[str]:
        with self.redis.client() as client:
            return client.zrange(f"{env['EPM_KEY_PREFIX']}jobs:active", 0, -1)

    def close(self) -> None:
        self.redis.stop()
        self.postgres.destroy()


@pytest.fixture(scope="module", name="backends")
def backends_fixture():
    """Our own Redis and PostgreSQL for one test module (tests/conftest.py registers this module's fixtures)."""
    own = Backends()
    yield own
    own.close()


@pytest.fixture(name="fleet")
def fleet_fixture():
    """The live servers and sessions of one test, stopped at its end."""
    own = Fleet()
    yield own
    own.close()


class Fleet:
    """The live servers and browser sessions of one test, all stopped and closed at its end."""

    def __init__(self) -> None:
        self.started: list[LiveServer] = []
        self.opened: list[Browserish] = []
        self.streams: list[StreamRecorder] = []

    def server(self, env: dict[str, str], workers: int = 1) -> LiveServer:
        self.started.append(LiveServer(env, workers=workers).start())
        return self.started[-1]

    def user(self, url: str) -> Browserish:
        self.opened.append(Browserish(url).signup())
        return self.opened[-1]

    def again(self, url: str, user: Browserish) -> Browserish:
        self.opened.append(signed_in_again(url, user))
        return self.opened[-1]

    def stream(self, url: str, user: Browserish, path: str = "/api/background-jobs/events",
               reconnect: bool = True) -> StreamRecorder:
        """Follow ``path`` as ``user`` in another browser session (its own connection)."""
        self.streams.append(StreamRecorder(self.again(url, user), path, reconnect).start())
        return self.streams[-1]

    def close(self) -> None:
        for stream in self.streams:
            stream.stop()
        for browser in self.opened:
            browser.close()
        for server in self.started:
            server.stop(signal.SIGQUIT)  # a quick stop: running jobs are recorded as interrupted


def job_state(user: Browserish, job_id: str) -> dict[str, Any]:
    response = user.get(f"/api/background-jobs/{job_id}")
    assert response.status_code == 200, f"job {job_id}: {response.status_code} {response.text[:300]}"
    return response.json()["job"]


def wait_terminal(user: Browserish, job_id: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (job := job_state(user, job_id))["terminal"] and job, timeout, 0.1,
                    f"job {job_id} to finish")


def wait_running(user: Browserish, job_id: str) -> None:
    wait_for(lambda: job_state(user, job_id)["status"] == "running", 30, 0.05, f"job {job_id} to run")


def signed_in_again(url: str, user: Browserish) -> Browserish:
    """Another browser session of ``user`` (its own connection, so maybe another worker)."""
    return Browserish(url, username=user.username, password=user.password).login()


def start_demo(user: Browserish, **params: Any) -> tuple[dict[str, Any], httpx.Response]:
    response = user.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": params})
    assert response.status_code == 202, response.text
    return response.json()["job"], response


def worker_serving(server: LiveServer, response: httpx.Response) -> int:
    """The pid of the gunicorn worker holding the connection ``response`` came on (read from /proc)."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local_port, remote_port = (int(addr.rsplit(":", 1)[1], 16) for addr in fields[1:3])
                if (local_port, remote_port) == (server.port, client_port):
                    inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for pid in server.worker_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    holders.add(pid)
    assert len(holders) == 1, f"no single worker holds the connection from port {client_port}: {holders}"
    return holders.pop()


def flask_jobs(env: dict[str, str], *args: str) -> str:
    """Run ``flask jobs ...`` as an operator would, against the backends of ``env``; return its output."""
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "jobs", *args], cwd=ROOT,
                            env={**os.environ, **env, "EPM_MAINTENANCE": "0"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


class StreamRecorder:
    """Follows an event stream in a thread, like a browser: records each line's arrival, reconnects when cut."""

    def __init__(self, user: Browserish, path: str, reconnect: bool = True):
        self.user = user
        self.path = path
        self.reconnect = reconnect
        self.events: list[dict[str, Any]] = []  # {"at", "event"|"comment", "data"}
        self.connections = 0
        self.ended = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StreamRecorder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop and not self.user.http.is_closed:
            self.connections += 1
            # Cut (a worker died, the server stops): reconnect, as EventSource does.
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                self._follow()
            if not self.reconnect:
                break
            time.sleep(0.3)
        self.ended.set()

    def _follow(self) -> None:
        with self.user.http.stream("GET", self.path, timeout=httpx.Timeout(10, read=5)) as response:
            if response.status_code != 200:
                return
            event: dict[str, Any] = {}
            for line in response.iter_lines():
                if self._stop:
                    return
                now = time.monotonic()
                if line.startswith(":"):
                    self.events.append({"at": now, "comment": line[1:].strip()})
                elif line == "" and event:
                    if "data" in event:
                        self.events.append({"at": now, "event": event.get("event"),
                                            "data": json.loads(event["data"])})
                    event = {}
                elif line:
                    name, _, value = line.partition(":")
                    event[name] = value.lstrip(" ")

    def jobs(self, job_id: str | None = None) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e.get("event") == "job"
                and (job_id is None or e["data"]["id"] == job_id)]

    def saw(self, job_id: str, **fields: Any) -> bool:
        return any(all(job.get(k) == v for k, v in fields.items()) for job in self.jobs(job_id))

    def stop(self) -> None:
        self._stop = True


def cut_off_runner(monkeypatch, store, job_id: str) -> None:
    """This process's runners lose Redis (their writes and heartbeats fail; a peer's reaper still works),
    until the heartbeat of ``job_id`` lapses."""

    def cut_off(*args, **kwargs):
        raise redis.ConnectionError("this process lost Redis")

    real_write = store.write

    def write(job, guard, **kwargs):
        if guard is Guard.RUNNER:
            cut_off()
        return real_write(job, guard, **kwargs)

    for name in ("save_progress", "heartbeat"):
        monkeypatch.setattr(store, name, cut_off)
    monkeypatch.setattr(store, "write", write)
    wait_for(lambda: (store.redis.zscore(store.active_key, job_id) or 0) < time.time(), 5, 0.05,
             "the heartbeat to lapse")


def wait_resumed(backends: Backends, env: dict[str, str], job_ids: list[str], since: float,
                 timeout: float = 30) -> dict[str, float]:
    """Seconds from ``since`` (a ``time.monotonic()``) until Redis showed each job at attempt 2 or later."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    with backends.redis.client() as client:
        while len(seen) < len(job_ids) and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hget(f"{env['EPM_KEY_PREFIX']}job:{job_id}", "attempt")
            now = time.monotonic()
            for job_id, attempt in zip(job_ids, pipe.execute(), strict=True):
                if job_id not in seen and int(attempt or 1) >= 2:
                    seen[job_id] = now - since
            time.sleep(0.05)
    missing = set(job_ids) - set(seen)
    assert not missing, f"not resumed within {timeout}s: {sorted(missing)}"
    return seen


def users_on(fleet: Fleet, url: str, count: int) -> list[Browserish]:
    """``count`` signed-up users of the server at ``url`` (signed up in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: fleet.user(url), range(count)))
