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
- no request failed and the server logged no error;
- the workers' memory stayed flat: their resident memory (RSS, read from /proc every ``--rss-every``
  seconds) has no upward trend after ``--warmup`` seconds. The trend is a least-squares line through
  the samples; its 95% confidence interval widens for the samples' autocorrelation (see ``rss_trend``).
  The run fails when the interval lies wholly above zero and the slope is above ``--rss-limit`` MB per
  hour: growth that noise cannot explain and that is not small. With ``--trace-frames`` above 0 the
  workers trace their allocations (``EPM_TRACEMALLOC_DIR``, see epm/memtrace.py) and the allocation
  sites and object types that grew between the end of the warm-up and the end of the run are printed.

It needs real Redis and PostgreSQL (``REDIS_URL``, ``DATABASE_URL``); it makes its own database and
key prefix and removes them at the end. Not part of the test suite (it takes minutes):

    REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python scripts/soak.py [--jobs 200] [--clients 500] [--seconds 300] [--workers 2] \\
        [--warmup 120] [--trace-frames 1]

Prints the figures as tables, then one JSON line; exits 1 if the audit found a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib
import httpx
from benchlib import Backends, CpuMeter, Server, percentile, print_table

TERMINAL = {"completed", "failed", "cancelled"}
#: RSS growth (MB per hour, all workers) tolerated even when the trend is beyond noise: see docs/performance.md
RSS_LIMIT_MB_PER_HOUR = 2.0


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
    def __init__(self, args: argparse.Namespace, server: Server, users: list[User], memory: MemoryWatch):
        self.args = args
        self.server = server
        self.users = users
        self.memory = memory
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
        began = time.monotonic()
        sampler = asyncio.create_task(self.memory.watch(began, lambda: sum(self.figures.ended.values()),
                                                        self.stop_starting))
        if self.memory.trace_dir is not None and self.args.warmup < self.args.seconds:
            # Snapshots at the end of the warm-up and of the run, both under full load: what grew in between.
            await asyncio.sleep(self.args.warmup)
            await self.memory.snapshot()
            await asyncio.sleep(max(0.0, began + self.args.seconds - time.monotonic()))
            await self.memory.snapshot()
        else:
            await asyncio.sleep(self.args.seconds)
        self.stop_starting.set()
        await sampler
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


# -- memory ------------------------------------------------------------------------------------------
@dataclass
class RssSample:
    at: float  # seconds since the soak began
    kb: dict[int, int]  # worker pid -> resident memory (VmRSS, kB)
    jobs_ended: int


class MemoryWatch:
    """Reads every worker's resident memory from /proc, and asks tracing workers for snapshots (SIGUSR2)."""

    def __init__(self, server: Server, every: float, trace_dir: Path | None):
        self.server = server
        self.every = every
        self.trace_dir = trace_dir
        self.samples: list[RssSample] = []
        self.snapshots: dict[int, list[int]] = {}  # snapshot number -> the workers that wrote it

    def sample(self, at: float, jobs_ended: int) -> None:
        kb = {}
        for pid in self.server.worker_pids():
            try:
                kb[pid] = benchlib.rss_kb(pid)
            except FileNotFoundError:
                continue  # a worker that just exited
        self.samples.append(RssSample(at, kb, jobs_ended))

    async def watch(self, began: float, jobs_ended, stop: asyncio.Event) -> None:
        """Sample every ``every`` seconds until ``stop``, and once more then."""
        while not stop.is_set():
            self.sample(time.monotonic() - began, jobs_ended())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
        self.sample(time.monotonic() - began, jobs_ended())

    async def snapshot(self, timeout: float = 180.0) -> None:
        """Have every worker write an allocation snapshot; return when all are written."""
        number = len(self.snapshots) + 1
        pids = self.server.worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not all((self.trace_dir / f"{pid}-{number}.tracemalloc").exists() for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {pids} wrote no allocation snapshot within {timeout:.0f}s")
            await asyncio.sleep(0.2)
        self.snapshots[number] = pids

    def window(self, warmup: float) -> list[RssSample]:
        """The samples after the warm-up, from workers that lived through all of it."""
        after = [sample for sample in self.samples if sample.at >= warmup]
        if not after:
            return []
        pids = set(after[0].kb)
        return [sample for sample in after if set(sample.kb) == pids]


def rss_trend(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Least-squares slope of ``(x, y)`` points with its 95% confidence interval; None under 6 points.

    Memory samples are not independent draws: the heap moves in steps and stays there, so neighbouring
    residuals agree. The ordinary interval would be too narrow, so it is widened for the lag-1
    autocorrelation ``r`` of the residuals (AR(1)): the slope's variance times ``(1 + r) / (1 - r)`` and
    the degrees of freedom cut to the effective number of samples ``n (1 - r) / (1 + r)``.
    """
    n = len(points)
    if n < 6:
        return None
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    residuals = [y - mean_y - slope * (x - mean_x) for x, y in points]
    squares = sum(r * r for r in residuals)
    r1 = sum(a * b for a, b in zip(residuals[:-1], residuals[1:], strict=True)) / squares if squares else 0.0
    r1 = min(max(r1, 0.0), 0.95)  # only ever widen; 0.95 keeps the arithmetic finite
    inflation = (1 + r1) / (1 - r1)
    n_eff = max(3.0, n / inflation)
    stderr = math.sqrt(squares / (n - 2) / sxx * inflation)
    half = _t975(n_eff - 2) * stderr
    return {"slope": slope, "low": slope - half, "high": slope + half, "n": n, "n_eff": n_eff, "r1": r1}


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def _t975(df: float) -> float:
    """Student's t 97.5% quantile (two-sided 95%): the table up to 30 degrees of freedom, then Cornish-Fisher."""
    whole = max(1, int(df))  # rounding down widens the interval
    if whole <= len(_T975):
        return _T975[whole - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * whole) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * whole ** 2)


def memory_figures(watch: MemoryWatch, warmup: float, limit_mb_per_hour: float) -> dict[str, Any]:
    """The workers' RSS trend after the warm-up, per hour and per finished job, and whether it is flat."""
    window = watch.window(warmup)
    trend = rss_trend([(s.at, sum(s.kb.values()) * 1024) for s in window])
    figures: dict[str, Any] = {"samples": len(window), "judged": trend is not None,
                               "limit_mb_per_hour": limit_mb_per_hour}
    if trend is None:
        return figures
    first, last = window[0], window[-1]
    jobs_per_second = (last.jobs_ended - first.jobs_ended) / max(1e-9, last.at - first.at)
    per_hour = 3600 / 2 ** 20
    figures.update({
        "from_s": first.at, "to_s": last.at, "jobs_ended": last.jobs_ended - first.jobs_ended,
        "rss_mb_first": sum(first.kb.values()) / 1024, "rss_mb_last": sum(last.kb.values()) / 1024,
        "slope_mb_per_hour": trend["slope"] * per_hour,
        "ci_mb_per_hour": [trend["low"] * per_hour, trend["high"] * per_hour],
        "bytes_per_job": trend["slope"] / jobs_per_second if jobs_per_second else None,
        "ci_bytes_per_job": ([trend["low"] / jobs_per_second, trend["high"] / jobs_per_second]
                             if jobs_per_second else None),
        "n_eff": trend["n_eff"], "r1": trend["r1"],
        "per_worker_mb_per_hour": {},
    })
    for pid in first.kb:
        worker = rss_trend([(s.at, s.kb[pid] * 1024) for s in window])
        if worker is not None:
            figures["per_worker_mb_per_hour"][pid] = worker["slope"] * per_hour
    figures["grew"] = grew(trend, limit_mb_per_hour)
    return figures


def grew(trend: dict[str, float], limit_mb_per_hour: float) -> bool:
    """Growth beyond noise and the limit; flat within noise is an interval that includes zero, or a slope
    (bytes per second) no steeper than ``limit_mb_per_hour``."""
    return trend["low"] > 0 and trend["slope"] * 3600 / 2 ** 20 > limit_mb_per_hour


_TRACE_FILTERS = [tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
                  tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<unknown>")]


def grown_allocations(watch: MemoryWatch, jobs: int, top: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """Allocation sites and object types that grew between the first and the last snapshot, all workers."""
    last = max(watch.snapshots)
    pids = [pid for pid in watch.snapshots[1] if pid in watch.snapshots[last]]
    sites: dict[str, list[int]] = {}
    types: Counter = Counter()
    for pid in pids:
        old, new = (tracemalloc.Snapshot.load(str(watch.trace_dir / f"{pid}-{n}.tracemalloc"))
                    .filter_traces(_TRACE_FILTERS) for n in (1, last))
        for stat in new.compare_to(old, "traceback"):
            entry = sites.setdefault(_site(stat.traceback), [0, 0])
            entry[0] += stat.size_diff
            entry[1] += stat.count_diff
        before, after = (json.loads((watch.trace_dir / f"{pid}-{n}.types.json").read_text()) for n in (1, last))
        types.update({name: after.get(name, 0) - before.get(name, 0) for name in set(before) | set(after)})
    per_job = max(1, jobs)
    site_rows = [[site, size / 1024, count, size / per_job]
                 for site, (size, count) in sorted(sites.items(), key=lambda item: -item[1][0])[:top]]
    type_rows = [[name, count, count / per_job] for name, count in types.most_common(top) if count > 0]
    return site_rows, type_rows


def _site(traceback: tracemalloc.Traceback) -> str:
    """The allocating line first, then its callers: ``epm/metrics.py:172 < epm/jobs/sse.py:296``."""
    return " < ".join(f"{_short(frame.filename)}:{frame.lineno}" for frame in reversed(traceback))


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(benchlib.ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


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


def print_memory(watch: MemoryWatch, mem: dict[str, Any], grown: tuple[list, list] | None, warmup: float) -> None:
    """The RSS over time (one sample a minute), its trend after the warm-up, and what grew."""
    every_minute, next_at = [], 0.0
    for sample in watch.samples:
        if sample.at >= next_at:
            every_minute.append([f"{sample.at / 60:.1f}", sum(sample.kb.values()) / 1024, sample.jobs_ended])
            next_at = sample.at - sample.at % 60 + 60
    print_table("Soak: workers' RSS (all workers, from /proc)", ["minute", "RSS (MB)", "jobs ended"], every_minute)
    if not mem["judged"]:
        print(f"\nmemory trend: not judged, {mem['samples']} samples after the {warmup:.0f}s warm-up "
              "(6 needed: run longer or sample more often)")
        return
    low, high = mem["ci_mb_per_hour"]
    rows = [["window (s)", f"{mem['from_s']:.0f} - {mem['to_s']:.0f}"],
            ["RSS at its start / end (MB)", f"{mem['rss_mb_first']:.1f} / {mem['rss_mb_last']:.1f}"],
            ["jobs ended in it", mem["jobs_ended"]],
            ["slope (MB per hour) [95% CI]", f"{mem['slope_mb_per_hour']:+.2f} [{low:+.2f}, {high:+.2f}]"],
            ["samples / effective (lag-1 r)", f"{mem['samples']} / {mem['n_eff']:.1f} ({mem['r1']:.2f})"],
            ["tolerated beyond noise (MB per hour)", mem["limit_mb_per_hour"]]]
    if mem["bytes_per_job"] is not None:
        job_low, job_high = mem["ci_bytes_per_job"]
        rows.append(["per finished job (bytes) [95% CI]",
                     f"{mem['bytes_per_job']:+.0f} [{job_low:+.0f}, {job_high:+.0f}]"])
    rows += [[f"worker {pid} (MB per hour)", f"{slope:+.2f}"] for pid, slope in mem["per_worker_mb_per_hour"].items()]
    rows.append(["verdict", "GREW beyond noise and the limit" if mem["grew"] else "flat within noise"])
    print_table(f"Soak: memory trend after the {warmup:.0f}s warm-up", ["figure", "value"], rows)
    if grown is not None:
        sites, types = grown
        print_table("Soak: allocation sites that grew between the snapshots (all workers; innermost frame first)",
                    ["site", "grew (kB)", "blocks", "bytes per job"], sites)
        print_table("Soak: object types that grew (gc-tracked objects)", ["type", "objects", "per job"], types)


@contextlib.contextmanager
def started(server: Server, timeout: float):
    """The server, started with ``timeout`` to answer (tracing workers on a busy machine start slowly)."""
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()


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
    parser.add_argument("--warmup", type=float, default=120, help="seconds before the memory trend counts")
    parser.add_argument("--rss-every", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--rss-limit", type=float, default=RSS_LIMIT_MB_PER_HOUR,
                        help="MB per hour (all workers) of RSS growth tolerated when it is beyond noise")
    parser.add_argument("--trace-frames", type=int, default=1,
                        help="frames per traced allocation in the workers (0: no tracing, RSS only)")
    parser.add_argument("--top", type=int, default=10, help="allocation sites and types to print")
    args = parser.parse_args()

    backends = Backends("soak")
    if not backends.real:
        print("soak needs real Redis and PostgreSQL: set REDIS_URL and DATABASE_URL", file=sys.stderr)
        return 2
    benchlib.raise_open_files(4 * (args.clients + args.jobs) + 1024)
    with backends:
        app = backends.app()
        ids = benchlib.create_users(app, args.jobs, "soak")
        trace_dir = Path(tempfile.mkdtemp(prefix="soak-trace-")) if args.trace_frames > 0 else None
        tracing = ({"EPM_TRACEMALLOC_DIR": str(trace_dir), "EPM_TRACEMALLOC_FRAMES": str(args.trace_frames)}
                   if trace_dir else {})
        env = backends.server_env(EPM_SSE_HEARTBEAT=str(args.sse_heartbeat), LOG_LEVEL="WARNING",
                                  EPM_GRACEFUL_TIMEOUT="30", **tracing)
        with started(Server(env, args.workers), timeout=120) as server:
            users = []
            for user_id in ids:
                cookie, csrf = benchlib.csrf_session(server.url, benchlib.session_cookie(app, user_id))
                users.append(User(user_id, cookie, csrf))
            print(f"soak: {args.jobs} job loops, {args.clients} streams, {args.seconds}s, {args.workers} workers "
                  f"on {backends.label}", flush=True)
            cpu = CpuMeter(server.pids)
            began = time.monotonic()
            memory = MemoryWatch(server, args.rss_every, trace_dir)
            soak = Soak(args, server, users, memory)
            asyncio.run(soak.main())
            elapsed = time.monotonic() - began
            cpu_percent = cpu.percent()
            rss_mb = sum(benchlib.rss_kb(pid) for pid in server.worker_pids()) / 1024
            log = server.log_path.read_text(errors="replace")
        checked = audit(backends, users)
    figures = soak.figures
    errors = server_errors(log)
    mem = memory_figures(memory, args.warmup, args.rss_limit)
    grown = (grown_allocations(memory, mem.get("jobs_ended", 0), args.top) if len(memory.snapshots) >= 2
             else None)
    if trace_dir is not None:
        shutil.rmtree(trace_dir, ignore_errors=True)
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
        "workers' memory grew (RSS trend)": int(bool(mem.get("grew"))),
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
    print_memory(memory, mem, grown, args.warmup)
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
                   "cpu_percent": cpu_percent, "problems": sum(problems.values()), "audit": checked,
                   "memory": mem, "load_average": os.getloadavg()})
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
