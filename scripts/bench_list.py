"""Benchmark: requests per second of ``GET /api/background-jobs`` answered 200 and answered 304.

One gunicorn+gevent worker on the run's backends (``REDIS_URL``/``DATABASE_URL``, or the embedded
default); the user holds 20 active jobs (live in Redis) and 1,000 finished ones (rows in the database).
Keep-alive clients send the same list request as fast as the worker answers, in alternating rounds:
without a validator (a 200 that reads the database and Redis) and with ``If-None-Match`` (a 304 from
the user's Redis version counter). The database statements each costs are counted twice: in this
process, with a listener on the app's engine, and, on PostgreSQL, from the server's own transaction
count during each round. A 304 that costs a database statement fails the run.

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

SIZES = {
    "quick": {"rounds": 2, "seconds": 2.0, "concurrency": 8, "active": 20, "finished": 1000, "counted": 50},
    "full": {"rounds": 5, "seconds": 5.0, "concurrency": 16, "active": 20, "finished": 1000, "counted": 200},
}
PATH = benchlib.LIST_PATH


def seed(app, user_id: str, active: int, finished: int) -> None:
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
                     "progress_message": "Countdown finished", "params": {"steps": 10},
                     "result_data": {"summary": "Counted 10 steps", "steps": 10} if status == "completed" else None,
                     "error_code": "demo_failure" if status == "failed" else None,
                     "error_message": "The countdown was told to fail." if status == "failed" else None,
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
                     "progress": 0, "progress_message": "Waiting to start", "params": {"steps": 20},
                     "user_id": user_id, "created_at": created})
    with app.app_context():
        db.session.execute(insert(BackgroundJob), rows)
        db.session.commit()
        store = current_jobs().store
        for job in live:
            store.save(job, publish=False)
        db.session.remove()


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

    with Backends("bench_list") as backends:
        print(f"bench_list on {backends.label}; sizes {sizes}", flush=True)
        app = backends.app()
        user_id = str(benchlib.create_users(app, 1, "lister")[0])
        seed(app, user_id, sizes["active"], sizes["finished"])
        cookie = benchlib.session_cookie(app, user_id)
        # The reaper would end the seeded jobs, which have no runner; it is not what is measured.
        with Server(backends.server_env(EPM_MAINTENANCE="0"), workers=1) as server:
            figures = measure(server, backends, cookie, sizes)
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


def report(backends: Backends, sizes: dict, figures: dict, counts: dict) -> None:
    results = figures["results"]

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
    }))
    if not ok_statements:
        print(f"FAILED: a 304 cost {counts['304']} database statements in process, "
              f"{xacts_per_request('304')} PostgreSQL transactions on the server", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
