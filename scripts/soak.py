"""Soak: many concurrent jobs and event streams on a real gunicorn+gevent server for minutes, then an audit.

For ``--seconds`` (default 300), ``--jobs`` users (default 200) each run demo jobs back to back, so that
many jobs are running at any moment, while ``--clients`` event streams (default 500) follow those users
(``GET /api/background-jobs/events``, spread round-robin). A few jobs fail on purpose (``--fail-rate``)
and some compute off the event loop (``--cpu-rate``). Then no new job starts, the running ones finish,
and the audit checks that:

- every job started reached a terminal state, in Redis and in PostgreSQL (same status), and nothing is
  left in the active set or the outbox;
- every stream saw the terminal event of every job of its user that ended while it was connected,
  and no stream went quiet for much longer than the keep-alive interval;
- no request failed and the server logged no error.

It needs real Redis and PostgreSQL (``REDIS_URL``, ``DATABASE_URL``); it makes its own database and
key prefix and removes them at the end. Not part of the test suite (it takes minutes):

    REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python scripts/soak.py [--jobs 200] [--clients 500] [--seconds 300] [--workers 2]

Prints the figures as tables, then one JSON line; exits 1 if the audit found a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import benchlib
import httpx
from benchlib import Backends, CpuMeter, Server, percentile, print_table

TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class User:
    id: int
    cookie: str
    csrf: str
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> what we know of it
    ended: dict[str, asyncio.Event] = field(default_factory=dict)


@dataclass
class Figures:
    started: int = 0
    start_ms: list[float] = field(default_factory=list)
    ended: Counter = field(default_factory=Counter)  # "completed", "failed/demo_failure", ...
    http_errors: Counter = field(default_factory=Counter)
    terminal_lag_ms: list[float] = field(default_factory=list)
    polled_for_end: int = 0
    stream_opens: int = 0
    stream_cuts: int = 0
    events: int = 0
    keepalives: int = 0
    max_gap: float = 0.0
    missed_terminal: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace, server: Server, users: list[User]):
        self.args = args
        self.server = server
        self.users = users
        self.figures = Figures()
        self.stop_starting = asyncio.Event()
        self.stop_streams = asyncio.Event()
        self.http = httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(30, read=None),
                                      limits=httpx.Limits(max_connections=args.clients + args.jobs + 50,
                                                          max_keepalive_connections=args.jobs + 50))

    # -- job loops -------------------------------------------------------------------------------
    async def run_jobs(self, user: User) -> None:
        await asyncio.sleep(random.random() * 2)  # do not start every loop in the same instant
        while not self.stop_starting.is_set():
            params: dict[str, Any] = {"steps": self.args.steps,
                                      "step_seconds": round(random.uniform(*self.args.step_seconds), 2)}
            if random.random() < self.args.fail_rate:
                params["fail_at"] = random.randint(2, self.args.steps)
            elif random.random() < self.args.cpu_rate:
                params["cpu_ms"] = self.args.cpu_ms
            began = time.monotonic()
            response = await self.http.post("/api/background-jobs", json={"job_type": "demo_countdown",
                                                                          "params": params},
                                            headers={"Cookie": f"session={user.cookie}", "X-CSRFToken": user.csrf})
            if response.status_code != 202:
                self.figures.http_errors[f"POST {response.status_code}"] += 1
                await asyncio.sleep(1)
                continue
            self.figures.start_ms.append((time.monotonic() - began) * 1000)
            self.figures.started += 1
            job = response.json()["job"]
            user.jobs[job["id"]] = {"params": params, "status": job["status"]}
            ended = user.ended.setdefault(job["id"], asyncio.Event())
            await self.wait_end(user, job["id"], ended)

    async def wait_end(self, user: User, job_id: str, ended: asyncio.Event) -> None:
        """The job's end as a stream delivers it; a job whose user has no stream is polled."""
        longest = self.args.steps * self.args.step_seconds[1] + self.args.steps * self.args.cpu_ms / 1000 + 60
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(ended.wait(), timeout=2.0)
                return
            except TimeoutError:
                if await self.poll(user, job_id):
                    self.figures.polled_for_end += 1
                    return

    async def poll(self, user: User, job_id: str) -> bool:
        response = await self.http.get(f"/api/background-jobs/{job_id}", headers={"Cookie": f"session={user.cookie}"})
        if response.status_code != 200:
            self.figures.http_errors[f"GET job {response.status_code}"] += 1
            return False
        job = response.json()["job"]
        if job["terminal"]:
            self.record_end(user, job)
            return True
        return False

    def record_end(self, user: User, job: dict[str, Any]) -> None:
        known = user.jobs.get(job["id"])
        if known is None or known["status"] in TERMINAL:
            return
        known["status"] = job["status"]
        self.figures.ended[job["status"] + (f"/{job['error_code']}" if job.get("error_code") else "")] += 1
        completed = datetime.fromisoformat(job["completed_at"].replace("Z", "+00:00")).timestamp()
        known["ended_at"] = completed
        self.figures.terminal_lag_ms.append(max(0.0, (time.time() - completed) * 1000))
        user.ended.setdefault(job["id"], asyncio.Event()).set()

    # -- event streams ---------------------------------------------------------------------------
    async def follow(self, user: User) -> None:
        """One browser's stream of the user's jobs, reconnecting like EventSource when it is cut."""
        await asyncio.sleep(random.random() * 3)
        while not self.stop_streams.is_set():
            seen_terminal: set[str] = set()
            opened_at = time.time()
            try:
                await self._read_stream(user, seen_terminal)
            except (httpx.HTTPError, asyncio.CancelledError) as exc:
                if self.stop_streams.is_set() or isinstance(exc, asyncio.CancelledError):
                    self._audit_stream(user, seen_terminal, opened_at)
                    return
                self.figures.stream_cuts += 1
            self._audit_stream(user, seen_terminal, opened_at)
            await asyncio.sleep(2)  # the retry the server asks for

    async def _read_stream(self, user: User, seen_terminal: set[str]) -> None:
        async with self.http.stream("GET", "/api/background-jobs/events",
                                    headers={"Cookie": f"session={user.cookie}"}) as response:
            if response.status_code != 200:
                self.figures.http_errors[f"GET events {response.status_code}"] += 1
                return
            self.figures.stream_opens += 1
            last = time.monotonic()
            data = None
            async for line in response.aiter_lines():
                now = time.monotonic()
                self.figures.max_gap = max(self.figures.max_gap, now - last)
                last = now
                if line.startswith(":"):
                    self.figures.keepalives += 1
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and data is not None:
                    job = json.loads(data)
                    data = None
                    self.figures.events += 1
                    if job["terminal"]:
                        seen_terminal.add(job["id"])
                        self.record_end(user, job)
                if self.stop_streams.is_set():
                    return

    def _audit_stream(self, user: User, seen_terminal: set[str], opened_at: float) -> None:
        """Count terminal events this stream should have seen: jobs of its user that ended while it was open."""
        closed_at = time.time() - 1.0  # the last second's events may still be on the way
        for job_id, known in user.jobs.items():
            ended_at = known.get("ended_at")
            if ended_at and opened_at + 1.0 < ended_at < closed_at and job_id not in seen_terminal:
                self.figures.missed_terminal += 1

    async def main(self) -> None:
        streams = [asyncio.create_task(self.follow(self.users[index % len(self.users)]))
                   for index in range(self.args.clients)]
        loops = [asyncio.create_task(self.run_jobs(user)) for user in self.users]
        reporter = asyncio.create_task(self.report())
        await asyncio.sleep(self.args.seconds)
        self.stop_starting.set()
        await asyncio.gather(*loops)
        await asyncio.sleep(2)
        self.stop_streams.set()
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        reporter.cancel()
        await self.http.aclose()

    async def report(self) -> None:
        began = time.monotonic()
        while True:
            await asyncio.sleep(15)
            running = sum(1 for user in self.users for job in user.jobs.values() if job["status"] not in TERMINAL)
            print(f"  {time.monotonic() - began:5.0f}s  started {self.figures.started:>6}  running {running:>4}  "
                  f"events {self.figures.events:>8}  http errors {sum(self.figures.http_errors.values())}",
                  flush=True)


def audit(backends: Backends, users: list[User]) -> dict[str, Any]:
    """Every job terminal in Redis and PostgreSQL, with the same status; nothing active, nothing in the outbox."""
    import psycopg
    import redis

    ids = [job_id for user in users for job_id in user.jobs]
    client = redis.Redis.from_url(backends.redis_url, decode_responses=True)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"{backends.prefix}job:{job_id}", "status", "error_code")
    live = dict(zip(ids, pipe.execute(), strict=True))
    active = client.zcard(f"{backends.prefix}jobs:active")
    outbox = client.zcard(f"{backends.prefix}outbox")
    client.close()
    with psycopg.connect(backends.database_url) as conn:
        rows = dict(conn.execute("SELECT id, status FROM background_jobs WHERE id = ANY(%s)", (ids,)).fetchall())
        stuck = conn.execute("SELECT count(*) FROM background_jobs WHERE status IN ('pending', 'running')")
        stuck = stuck.fetchone()[0]
    not_terminal_redis = [job_id for job_id, (status, _) in live.items() if status not in TERMINAL]
    not_terminal_db = [job_id for job_id in ids if rows.get(job_id) not in TERMINAL]
    disagree = [job_id for job_id in ids if rows.get(job_id) in TERMINAL and rows[job_id] != live[job_id][0]]
    return {"jobs": len(ids), "not_terminal_in_redis": len(not_terminal_redis),
            "not_terminal_in_postgres": len(not_terminal_db), "redis_postgres_disagree": len(disagree),
            "left_active": active, "left_in_outbox": outbox, "rows_left_active": stuck,
            "examples": (not_terminal_redis + not_terminal_db + disagree)[:5]}


def server_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)]


def main() -> int:
    if "--chaos" in sys.argv:  # the same soak with faults at random, on servers of its own: scripts/chaos.py
        import chaos

        return chaos.main([arg for arg in sys.argv[1:] if arg != "--chaos"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="concurrent job loops (one user each)")
    parser.add_argument("--clients", type=int, default=500, help="event streams open at once")
    parser.add_argument("--seconds", type=int, default=300, help="how long new jobs keep starting")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--steps", type=int, default=10, help="steps of each demo job")
    parser.add_argument("--step-seconds", type=float, nargs=2, default=(0.1, 1.0), metavar=("MIN", "MAX"))
    parser.add_argument("--fail-rate", type=float, default=0.05, help="share of jobs told to fail")
    parser.add_argument("--cpu-rate", type=float, default=0.1, help="share of jobs that compute")
    parser.add_argument("--cpu-ms", type=float, default=20, help="CPU per step of a computing job")
    parser.add_argument("--sse-heartbeat", type=float, default=5.0, help="EPM_SSE_HEARTBEAT of the server")
    args = parser.parse_args()

    backends = Backends("soak")
    if not backends.real:
        print("soak needs real Redis and PostgreSQL: set REDIS_URL and DATABASE_URL", file=sys.stderr)
        return 2
    benchlib.raise_open_files(4 * (args.clients + args.jobs) + 1024)
    with backends:
        app = backends.app()
        ids = benchlib.create_users(app, args.jobs, "soak")
        env = backends.server_env(EPM_SSE_HEARTBEAT=str(args.sse_heartbeat), LOG_LEVEL="WARNING",
                                  EPM_GRACEFUL_TIMEOUT="30")
        with Server(env, args.workers) as server:
            users = []
            for user_id in ids:
                cookie, csrf = benchlib.csrf_session(server.url, benchlib.session_cookie(app, user_id))
                users.append(User(user_id, cookie, csrf))
            print(f"soak: {args.jobs} job loops, {args.clients} streams, {args.seconds}s, {args.workers} workers "
                  f"on {backends.label}", flush=True)
            cpu = CpuMeter(server.pids)
            began = time.monotonic()
            soak = Soak(args, server, users)
            asyncio.run(soak.main())
            elapsed = time.monotonic() - began
            cpu_percent = cpu.percent()
            rss_mb = sum(benchlib.rss_kb(pid) for pid in server.worker_pids()) / 1024
            log = server.log_path.read_text(errors="replace")
        checked = audit(backends, users)
    figures = soak.figures
    errors = server_errors(log)
    problems = {
        "jobs not terminal (Redis)": checked["not_terminal_in_redis"],
        "jobs not terminal (PostgreSQL)": checked["not_terminal_in_postgres"],
        "Redis and PostgreSQL disagree": checked["redis_postgres_disagree"],
        "left in the active set": checked["left_active"],
        "left in the outbox": checked["left_in_outbox"],
        "rows left pending/running": checked["rows_left_active"],
        "failed requests": sum(figures.http_errors.values()),
        "server log errors": len(errors),
        "terminal events a stream missed": figures.missed_terminal,
        "unexpected job failures": sum(n for key, n in figures.ended.items()
                                       if key.startswith("failed") and key != "failed/demo_failure"),
    }
    print_table("Soak: what ran", ["figure", "value"], [
        ["wall time (s)", elapsed], ["jobs started", figures.started],
        ["jobs per second", figures.started / max(1.0, elapsed)],
        *[[f"ended {key}", count] for key, count in sorted(figures.ended.items())],
        ["start p50 / p95 / p99 (ms)", " / ".join(benchlib.fmt(percentile(figures.start_ms, p)) for p in (50, 95, 99))],
        ["terminal event lag p50 / p99 (ms)",
         " / ".join(benchlib.fmt(percentile(figures.terminal_lag_ms, p)) for p in (50, 99))],
        ["ends first seen by polling (2 s)", figures.polled_for_end],
        ["streams opened (incl. reconnects)", figures.stream_opens], ["streams cut", figures.stream_cuts],
        ["events received", figures.events], ["keep-alives received", figures.keepalives],
        ["longest quiet on a stream (s)", figures.max_gap],
        ["server CPU (% of one core)", cpu_percent], ["workers' RSS (MB)", rss_mb],
    ])
    print_table("Soak: audit", ["check", "problems"], [[name, count] for name, count in problems.items()])
    if figures.http_errors:
        print("failed requests:", dict(figures.http_errors))
    for line in errors[:10]:
        print("server:", line)
    if checked["examples"]:
        print("examples:", checked["examples"])
    quiet_limit = args.sse_heartbeat + 2.0
    if figures.max_gap > quiet_limit:
        problems[f"a stream quiet over {quiet_limit:.0f}s"] = 1
    benchlib.emit({"benchmark": "soak", "seconds": elapsed, "jobs_started": figures.started,
                   "ended": dict(figures.ended), "events": figures.events, "stream_opens": figures.stream_opens,
                   "start_p99_ms": percentile(figures.start_ms, 99),
                   "terminal_lag_p99_ms": percentile(figures.terminal_lag_ms, 99), "max_stream_gap_s": figures.max_gap,
                   "cpu_percent": cpu_percent, "problems": sum(problems.values()), "audit": checked})
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
