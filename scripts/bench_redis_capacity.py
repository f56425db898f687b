"""Benchmark: how many running jobs one Redis master carries, from what a progress write costs Redis.

Writers in threads call the real ``JobStore.save_progress(job)`` (the runner's hot path: the
hash, the heartbeat deadline, the user's version, two publishes) on jobs of their own, as fast as they
can, for a few seconds; beside them, in alternate rounds, the same writers send bare ``PING``s (the floor).
Redis's own CPU time (``INFO cpu``) over each round gives the cost of one write *to Redis*, whatever the
client machine adds; one Redis core then carries ``1 / cost`` writes a second, and a running job sends
at most ~10 a second (coalescing, ``EPM_PROGRESS_INTERVAL``) plus one heartbeat.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python scripts/bench_redis_capacity.py [--seconds 3] [--rounds 3]

Keys use a fresh prefix and are deleted at the end. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid

import redis

from epm.jobs.job import Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.store import Guard, JobStore

WRITERS = 8
UPDATES_PER_JOB = 10 + 1  # coalesced progress (EPM_PROGRESS_INTERVAL 0.1 s) and one heartbeat a second


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def run(client: redis.Redis, store: JobStore, jobs: list[Job], seconds: float, kind: str) -> tuple[int, float]:
    """``kind`` ("save" or "ping") from every writer for ``seconds``: (calls, Redis CPU seconds)."""
    stop = time.monotonic() + seconds
    counts = [0] * len(jobs)

    def writer(n: int) -> None:
        job = jobs[n]
        while time.monotonic() < stop:
            if kind == "save":
                job.progress = (job.progress + 1) % 100
                job.seq = next_seq(job.seq)
                store.save_progress(job)
            else:
                store.redis.ping()
            counts[n] += 1

    before = redis_cpu(client)
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), redis_cpu(client) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"  # a script, not the app: no epm.config
    client = redis.Redis.from_url(url, decode_responses=True)
    prefix = f"epmbench:{uuid.uuid4().hex[:8]}:"
    store = JobStore(client, prefix=prefix)
    now = iso(utcnow())
    jobs = [Job(id=uuid.uuid4().hex, job_type="bench", user_id=f"u{n}", status=JobStatus.RUNNING, message="x",
                created_at=now, started_at=now, updated_at=now, seq=next_seq(0)) for n in range(WRITERS)]
    for job in jobs:
        store.write(job, Guard.RECORD, publish=False)
    results: dict[str, list[tuple[int, float]]] = {"ping": [], "save": []}
    try:
        for _ in range(args.rounds):
            for kind in ("ping", "save"):  # interleaved: both see the same machine
                results[kind].append(run(client, store, jobs, args.seconds, kind))
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    load = os.getloadavg()[0]
    figures = {}
    print(f"{'':8}{'calls/s':>12}{'Redis CPU µs/call':>20}{'calls/s per Redis core':>25}")
    for kind, rounds in results.items():
        calls = sum(c for c, _ in rounds)
        cpu = sum(s for _, s in rounds)
        per_call = cpu / calls
        figures[kind] = {"calls_per_s": calls / (args.seconds * args.rounds), "redis_cpu_us": per_call * 1e6,
                         "per_core": 1 / per_call}
        print(f"{kind:8}{figures[kind]['calls_per_s']:>12,.0f}{per_call * 1e6:>20.1f}{1 / per_call:>25,.0f}")
    jobs_per_core = figures["save"]["per_core"] / UPDATES_PER_JOB
    print(f"one Redis core carries about {jobs_per_core:,.0f} running jobs at {UPDATES_PER_JOB} writes/s each "
          f"(load average {load:.1f}, {WRITERS} writers, {args.rounds} rounds of {args.seconds:g} s)")
    print(json.dumps({"figures": figures, "jobs_per_core": jobs_per_core, "load_average": load}))


if __name__ == "__main__":
    main()
