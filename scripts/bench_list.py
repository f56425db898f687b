"""Benchmark: requests per second of ``GET /api/background-jobs`` answered 200 and answered 304.

One gunicorn+gevent worker on the run's backends (``REDIS_URL``/``DATABASE_URL``, or the embedded
default); the user holds 20 active jobs (live in Redis) and 1,000 finished ones (rows in the database).
Keep-alive clients send the same list request as fast as the worker answers, in alternating rounds:
without a validator (a 200 that reads the database and Redis) and with ``If-None-Match`` (a 304 from
the user's Redis version counter). The database statements each costs are counted twice: in this
process, with a listener on the app's engine, and, on PostgreSQL, from the server's own transaction
count during each round. A 304 that costs a database statement fails the run. Then ``pollers`` users each poll
their own list as the browser's one polling tab does when its stream is down (every 3 s), with
``If-None-Match`` and with ``?since=V`` in alternating rounds: ``busy`` of them have a running job that
reports progress every ``move_every`` seconds (a stage every 2 s by default), the others only finished
jobs (``history`` each). The 304 share and the bytes of each group, and the worker CPU and PostgreSQL
transactions per answer of each way of polling.

    .venv/bin/python scripts/bench_list.py [--quick]

Prints a table, then one JSON line of figures. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import benchlib
from benchlib import Backends, CpuMeter, HttpConnection, Server, median, percentile, print_table

from epm.jobs.job import Job, JobStatus, iso, next_seq
from epm.jobs.store import Guard

SIZES = {
    "quick": {"rounds": 2, "seconds": 2.0, "concurrency": 8, "active": 20, "finished": 1000, "counted": 50,
              "pollers": 20, "poll_interval": 0.5, "poll_seconds": 3.0, "busy": 10, "move_every": 0.3,
              "history": 20},
    "full": {"rounds": 5, "seconds": 5.0, "concurrency": 16, "active": 20, "finished": 1000, "counted": 200,
             "pollers": 50, "poll_interval": 3.0, "poll_seconds": 15.0, "busy": 25, "move_every": 2.0,
             "history": 20},
}
PATH = benchlib.LIST_PATH


def seed(app, user_id: str, active: int, finished: int) -> list[Job]:
    """Give the user ``finished`` jobs in the database and ``active`` newer ones running in Redis."""
    from sqlalchemy import insert

    from epm.extensions import db
    from epm.jobs import current_jobs
    from epm.jobs.models import BackgroundJob

    now = datetime.now(UTC)
    rows = []
    for index in range(finished):
        created = now - timedelta(days=30) + timedelta(minutes=index)
        status = {3: "failed", 7: "cancelled"}.get(index % 10, "completed")
        rows.append({"id": uuid.uuid4().hex, "job_type": "demo_countdown", "title": "Demo countdown",
                     "status": status, "progress": 100 if status == "completed" else 40,
                     "message": "Countdown finished", "params": {"steps": 10},
                     "result": {"summary": "Counted 10 steps", "steps": 10} if status == "completed" else None,
                     "error_code": "demo_failure" if status == "failed" else None,
                     "error": "The countdown was told to fail." if status == "failed" else None,
                     "user_id": user_id, "created_at": created, "started_at": created,
                     "completed_at": created + timedelta(seconds=20), "acknowledged_at": created})
    live = []
    for index in range(active):
        created = now - timedelta(minutes=active - index)
        job = Job(id=uuid.uuid4().hex, job_type="demo_countdown", user_id=user_id, title="Demo countdown",
                  status=JobStatus.RUNNING, progress=index * 5 % 100, message=f"Step {index + 1} of 20",
                  created_at=iso(created), started_at=iso(created), updated_at=iso(now))
        job.seq = next_seq(0)
        live.append(job)
        rows.append({"id": job.id, "job_type": job.job_type, "title": job.title, "status": "pending",
                     "progress": 0, "message": "Waiting to start", "params": {"steps": 20},
                     "user_id": user_id, "created_at": created})
    with app.app_context():
        db.session.execute(insert(BackgroundJob), rows)
        db.session.commit()
        store = current_jobs().store
        for job in live:
            store.write(job, Guard.RECORD, publish=False)
        db.session.remove()
    return live


def seed_pollers(app, count: int, busy: int, history: int) -> tuple[list[tuple[str, str]], list[Job]]:
    """``count`` users with ``history`` finished jobs each; the first ``busy`` also run one job (in Redis).
    Returns each user's ``(cookie, group)`` and the running jobs."""
    pollers, running = [], []
    for index, user_id in enumerate(benchlib.create_users(app, count, "poller")):
        live = seed(app, str(user_id), 1 if index < busy else 0, history)
        running.extend(live)
        pollers.append((benchlib.session_cookie(app, user_id), "busy" if index < busy else "idle"))
    return pollers, running


class Mover:
    """Running jobs that move: each of ``jobs`` reports progress every ``every`` seconds (the real write)."""

    def __init__(self, app, jobs: list[Job], every: float):
        import threading

        self.store = app.extensions["epm.jobs"].store
        self.jobs = jobs
        self.every = every
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Mover:
        self._thread.start()
        return self

    def _run(self) -> None:
        from epm.jobs.job import utcnow

        pause = self.every / max(1, len(self.jobs))
        while not self._stop.is_set():
            for job in self.jobs:
                job.progress = (job.progress + 1) % 100
                job.message = f"Working on step {job.progress}"
                job.seq = next_seq(job.seq)
                job.updated_at = iso(utcnow())
                self.store.save_progress(job)
                self.writes += 1
                if self._stop.wait(pause):
                    return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def poll(port: int, pollers: list[tuple[str, str]], mode: str, interval: float, seconds: float) -> dict:
    """Each ``(cookie, group)`` polls its user's list every ``interval`` s, as jobs.js does when its stream is
    down: ``etag`` sends If-None-Match with the last ETag; ``since`` asks for what changed since the last
    version it was given (``?since=V``). Counts by group, and in all under ``"all"``."""
    import json
    import random

    counts: dict[str, dict[str, float]] = {}

    def count(group: str) -> dict[str, float]:
        return counts.setdefault(group, {"200": 0, "304": 0, "other": 0, "bytes": 0})

    async def poller(cookie: str, group: str, offset: float) -> None:
        conn = await HttpConnection.open(port)
        etag, version = None, 0
        await asyncio.sleep(offset)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if mode == "etag":
                raw = benchlib.get_request(PATH + "?limit=50", cookie, {"If-None-Match": etag} if etag else None)
            else:
                raw = benchlib.get_request(f"{PATH}?limit=50&since={version}", cookie)
            status, headers, body = await conn.request(raw)
            for tally in (count(group), count("all")):
                tally["bytes"] += len(body)
                tally[str(status) if status in (200, 304) else "other"] += 1
            if status == 200:
                etag = (headers.get(b"etag") or b"").decode() or etag
                version = json.loads(body).get("version", version)
            await asyncio.sleep(interval)
        conn.close()

    await asyncio.gather(*(poller(cookie, group, random.uniform(0, interval)) for cookie, group in pollers))
    for tally in counts.values():
        answers = tally["200"] + tally["304"] + tally["other"]
        tally.update(answers=answers, share_304=tally["304"] / max(1, answers),
                     bytes_per_answer=tally["bytes"] / max(1, answers))
    return counts


async def load(port: int, raw: bytes, expect: int, concurrency: int, seconds: float) -> dict[str, float]:
    """Send ``raw`` back to back on ``concurrency`` keep-alive connections for ``seconds``."""
    connections = [await HttpConnection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(conn: HttpConnection) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            status, _, _ = await conn.request(raw)
            latencies.append(time.perf_counter() - sent)
            if status != expect:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in connections))
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "errors": errors,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


class TransactionCounter:
    """The server's PostgreSQL transactions during a round, from PostgreSQL's own statistics.

    A backend reports its counts when it ends, so the run's connections are ended before each
    reading (the server's pool reconnects on its next use).
    """

    def __init__(self, backends: Backends):
        self.backends = backends

    def reading(self) -> int | None:
        if not self.backends.real:
            return None
        import psycopg

        with psycopg.connect(self.backends._admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (self.backends.db_name,))
            deadline = time.monotonic() + 10
            while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                               (self.backends.db_name,)).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the run's database connections did not end")
                time.sleep(0.02)
        return self.backends.db_transactions()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    for name, value in SIZES["full"].items():
        parser.add_argument(f"--{name}", type=type(value), help=f"override the size {name}")
    args = parser.parse_args()
    sizes = dict(SIZES["quick" if args.quick else "full"])
    sizes.update({name: getattr(args, name) for name in sizes if getattr(args, name) is not None})

    with Backends("bench_list", own_redis=True) as backends:
        print(f"bench_list on {backends.label}; sizes {sizes}; {benchlib.load_average()}", flush=True)
        app = backends.app()
        user_id = str(benchlib.create_users(app, 1, "lister")[0])
        seed(app, user_id, sizes["active"], sizes["finished"])
        cookie = benchlib.session_cookie(app, user_id)
        # The reaper would end the seeded jobs, which have no runner; it is not what is measured.
        pollers, running = seed_pollers(app, sizes["pollers"], sizes["busy"], sizes["history"])
        with Server(backends.server_env(EPM_MAINTENANCE="0"), workers=1) as server:
            figures = measure(server, backends, cookie, sizes)
            with Mover(app, running, sizes["move_every"]) as mover:
                figures["polling"] = measure_polling(server, backends, pollers, sizes)
            figures["moves"] = mover.writes
        counts = benchlib.list_statements(app, cookie, sizes["counted"])
        with app.app_context():
            from epm.extensions import db

            db.engine.dispose()
    report(backends, sizes, figures, counts)


def measure(server: Server, backends: Backends, cookie: str, sizes: dict) -> dict:
    plain = benchlib.get_request(PATH, cookie)

    async def first() -> tuple[str, int]:
        conn = await HttpConnection.open(server.port)
        status, headers, body = await conn.request(plain)
        conn.close()
        if status != 200:
            raise RuntimeError(f"GET {PATH} answered {status}: {body[:300]!r}")
        return headers[b"etag"].decode(), body.count(b'"id"')

    etag, listed = asyncio.run(first())
    requests = {"200": plain, "304": benchlib.get_request(PATH, cookie, {"If-None-Match": etag}),
                # The cheapest answer the app gives (no I/O, session untouched): the framework's floor.
                "floor": benchlib.get_request("/healthz", cookie)}
    asyncio.run(load(server.port, plain, 200, sizes["concurrency"], 1.0))  # warm up
    worker = server.worker_pids()
    results: dict[str, list[dict]] = {kind: [] for kind in requests}
    transactions = TransactionCounter(backends)
    for _ in range(sizes["rounds"]):
        for kind, raw in requests.items():
            before = transactions.reading()
            server_cpu = CpuMeter(lambda: worker)
            client_cpu = CpuMeter(lambda: [os.getpid()])
            expect = 200 if kind == "floor" else int(kind)
            result = asyncio.run(load(server.port, raw, expect, sizes["concurrency"], sizes["seconds"]))
            result["server_cpu_pct"] = server_cpu.percent()
            result["client_cpu_pct"] = client_cpu.percent()
            after = transactions.reading()
            result["db_xacts"] = None if before is None else after - before
            results[kind].append(result)
    return {"listed": listed, "results": results}


def measure_polling(server: Server, backends: Backends, pollers: list[tuple[str, str]], sizes: dict) -> dict:
    """The pollers with If-None-Match and with ?since=, in alternating rounds, while the busy users' jobs move."""
    worker = server.worker_pids()
    transactions = TransactionCounter(backends)
    found: dict[str, list[dict]] = {"etag": [], "since": []}
    for _ in range(max(1, sizes["rounds"] // 2)):
        for mode in found:
            before = transactions.reading()
            server_cpu = CpuMeter(lambda: worker)
            started = time.monotonic()
            result = asyncio.run(poll(server.port, pollers, mode, sizes["poll_interval"], sizes["poll_seconds"]))
            cpu_seconds = server_cpu.percent() / 100 * (time.monotonic() - started)
            answers = result["all"]["answers"]
            result["all"]["cpu_us_per_answer"] = cpu_seconds / max(1, answers) * 1e6
            after = transactions.reading()
            result["all"]["db_xacts_per_answer"] = None if before is None else (after - before) / max(1, answers)
            found[mode].append(result)
    return found


def report(backends: Backends, sizes: dict, figures: dict, counts: dict) -> None:
    results = figures["results"]
    polling = figures["polling"]

    def polled(mode: str, name: str, group: str = "all") -> float | None:
        return median([r[group][name] for r in polling[mode] if r.get(group, {}).get(name) is not None])

    def med(kind: str, name: str) -> float | None:
        values = [r[name] for r in results[kind] if r[name] is not None]
        return median(values)

    def xacts_per_request(kind: str) -> float | None:
        if not backends.real:
            return None
        return sum(r["db_xacts"] for r in results[kind]) / sum(r["requests"] for r in results[kind])

    ratio = median([b["rps"] / a["rps"] for a, b in zip(results["200"], results["304"], strict=True)])
    of_floor = median([b["rps"] / a["rps"] for a, b in zip(results["floor"], results["304"], strict=True)])
    counts["floor"] = None
    labels = {"200": "200 (reads PostgreSQL + Redis)", "304": "304 (If-None-Match: one Redis GET)",
              "floor": "GET /healthz (no I/O: the floor)"}
    print_table(f"GET {PATH} on one gevent worker, {backends.label}: the user has {sizes['active']} active and "
                f"{sizes['finished']:,} finished jobs; {figures['listed']} listed per page "
                f"(medians of {sizes['rounds']} alternating rounds of {sizes['seconds']:g} s, "
                f"{sizes['concurrency']} keep-alive connections)",
                ["answer", "requests/s", "p50 ms", "p99 ms", "DB statements / request (in process)",
                 "DB transactions / request (PostgreSQL's count)", "worker CPU %", "client CPU %", "errors"],
                [[labels[kind], med(kind, "rps"), med(kind, "p50_ms"), med(kind, "p99_ms"), counts[kind],
                  xacts_per_request(kind), med(kind, "server_cpu_pct"), med(kind, "client_cpu_pct"),
                  sum(r["errors"] for r in results[kind])]
                 for kind in ("200", "304", "floor")])
    print(f"\nStatements of a 200: {counts['200_statements']}")
    print(f"304 vs 200: {ratio:.1f}x the requests per second (median of per-round ratios); the 304 runs at "
          f"{of_floor:.0%} of the floor's rate, so no 304 could beat the 200 by more than "
          f"{ratio / of_floor:.1f}x here")
    groups = (("busy", f"with a running job (a progress write every {sizes['move_every']:g} s)"),
              ("idle", "without a running job"))
    rows = []
    for mode, label in (("etag", "If-None-Match (the user's version)"), ("since", "?since=V (jobs written after V)")):
        for group, who in groups:
            rows.append([f"{label}, pollers {who}", polled(mode, "answers", group), polled(mode, "share_304", group),
                         polled(mode, "bytes_per_answer", group), None, None,
                         sum(r.get(group, {}).get("other", 0) for r in polling[mode])])
        rows.append([f"{label}, all", polled(mode, "answers"), polled(mode, "share_304"),
                     polled(mode, "bytes_per_answer"), polled(mode, "cpu_us_per_answer"),
                     polled(mode, "db_xacts_per_answer"), sum(r["all"]["other"] for r in polling[mode])])
    print_table(f"Polling: {sizes['pollers']} users each poll their own list every {sizes['poll_interval']:g} s for "
                f"{sizes['poll_seconds']:g} s per round; {sizes['busy']} of them run a job that reports progress "
                f"every {sizes['move_every']:g} s ({figures['moves']} writes in all), the others have only "
                f"finished jobs ({sizes['history']} each); medians of the rounds",
                ["poller", "answers", "304 share", "bytes per answer", "worker CPU µs per answer",
                 "DB transactions per answer", "errors"], rows)
    ok_statements = counts["304"] == 0 and (xacts_per_request("304") or 0) == 0
    verdicts = [("304 costs no DB statement", ok_statements), ("304 >= 5x the rps of a 200", ratio >= 5)]
    print("Targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in verdicts))
    benchlib.emit(benchlib.rounded({
        "backend": "real" if backends.real else "embedded",
        "active_jobs": sizes["active"], "finished_jobs": sizes["finished"], "listed": figures["listed"],
        "concurrency": sizes["concurrency"],
        "rps_200": med("200", "rps"), "rps_304": med("304", "rps"), "rps_ratio": ratio,
        "rps_floor": med("floor", "rps"), "rps_304_of_floor": of_floor,
        "p50_ms_200": med("200", "p50_ms"), "p50_ms_304": med("304", "p50_ms"),
        "db_statements_per_200": counts["200"], "db_statements_per_304": counts["304"],
        "db_xacts_per_200": xacts_per_request("200"), "db_xacts_per_304": xacts_per_request("304"),
        "errors": sum(r["errors"] for kind in results for r in results[kind]),
        "load": benchlib.load_average(), "busy_pollers": sizes["busy"], "move_every_s": sizes["move_every"],
        "pollers": sizes["pollers"], "poll_interval_s": sizes["poll_interval"],
        "poll_304_share_etag": polled("etag", "share_304"), "poll_304_share_since": polled("since", "share_304"),
        "poll_304_share_etag_running_job": polled("etag", "share_304", "busy"),
        "poll_304_share_since_running_job": polled("since", "share_304", "busy"),
        "poll_304_share_etag_no_running_job": polled("etag", "share_304", "idle"),
        "poll_304_share_since_no_running_job": polled("since", "share_304", "idle"),
        "poll_bytes_since_running_job": polled("since", "bytes_per_answer", "busy"),
        "poll_bytes_etag_running_job": polled("etag", "bytes_per_answer", "busy"),
        "poll_bytes_etag": polled("etag", "bytes_per_answer"), "poll_bytes_since": polled("since", "bytes_per_answer"),
        "poll_cpu_us_etag": polled("etag", "cpu_us_per_answer"),
        "poll_cpu_us_since": polled("since", "cpu_us_per_answer"),
        "poll_db_xacts_etag": polled("etag", "db_xacts_per_answer"),
        "poll_db_xacts_since": polled("since", "db_xacts_per_answer"),
        "poll_errors": sum(r["all"]["other"] for mode in polling for r in polling[mode]),
    }))
    if not ok_statements:
        print(f"FAILED: a 304 cost {counts['304']} database statements in process, "
              f"{xacts_per_request('304')} PostgreSQL transactions on the server", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
