"""Chaos soak: jobs and event streams on two instances while workers, instances, Redis and PostgreSQL fail.

Runs on servers of its own (tests/fault_support.py: a redis-server and a PostgreSQL cluster on free
ports, two gunicorn instances of ``--workers`` each), so the machine's shared ones are never touched.
For ``--seconds``, ``--users`` users each run demo jobs back to back and follow their event stream,
while every ``--every`` seconds (on average) one fault strikes, every kind once in each round of five, in
a random order: ``kill -9`` of a worker, ``kill -9`` of every worker of an instance, SIGTERM of an instance
(started again on the same port), Redis restarted without its data, PostgreSQL stopped for ``--outage``
seconds. Then no job starts, the running ones finish, and it prints:

- jobs started, completed, resumed (seen at attempt 2 or more, by a poll or a stream), lost (not
  completed, or not the same in Redis and PostgreSQL; must be 0), duplicated (an older attempt wrote
  after a newer one began; must be 0);
- max time to reap: from a fault to the take-over of a job it interrupted (each attempt's ``ended_at``);
- max stream gap: the longest a user went without a line (events or keep-alives) on either of its two
  streams (one through each instance, as a browser behind a load balancer), reconnects included.

    .venv/bin/python scripts/chaos.py [--seconds 600] [--users 12] [--every 40]
    .venv/bin/python scripts/soak.py --chaos [same options]

Exits 1 if a job was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fault_support import Backends, Fleet, signed_in_again  # noqa: E402
from tests.support import LiveServer  # noqa: E402

HEARTBEAT_TIMEOUT = 5
PERIOD = 1
FAULTS = ("kill_worker", "kill_instance_workers", "sigterm_instance", "redis_restart", "postgres_outage")


class Chaos:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.backends = Backends()
        self.env = self.backends.env(EPM_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT), EPM_MAINTENANCE_INTERVAL=str(PERIOD),
                                     EPM_SSE_HEARTBEAT="1", EPM_GRACEFUL_TIMEOUT="5", LOG_LEVEL="WARNING",
                                     # the users' jobs are the test operation; they all sign in from 127.0.0.1,
                                     # several times each (rate limits are not what is measured here)
                                     EPM_DEMO="1", EPM_RATE_LIMITS="0")
        self.fleet = Fleet()
        self.instances: list[LiveServer] = []
        self.faults: list[tuple[float, str]] = []
        self.deck: list[str] = []
        self.loads: list[float] = []  # the 1-minute load average at each fault
        self.jobs: dict[str, dict[str, Any]] = {}  # id -> {"user", "params"}
        self.errors: dict[str, int] = {}
        self.attempts: dict[str, list[dict[str, Any]]] = {}  # id -> the earlier runs, as last seen
        self.stop = threading.Event()
        self.lock = threading.Lock()

    # -- setup -------------------------------------------------------------------------------------
    def start(self) -> None:
        for _ in range(2):
            self.instances.append(LiveServer(self.env, workers=self.args.workers).start(90))
            self.fleet.started.append(self.instances[-1])
        self.users = []
        for n in range(self.args.users):
            home = self.instances[n % 2]
            user = self.fleet.user(home.url)
            # One session per instance, so a user carries on through the other when one is down.
            self.users.append([user, signed_in_again(self.instances[(n + 1) % 2].url, user)])
        # Each user's browser follows its jobs through both instances, as behind a load balancer: the
        # user's view goes quiet only when neither stream delivers.
        self.streams = [[self.fleet.stream(instance.url, sessions[0]) for instance in self.instances]
                        for sessions in self.users]

    # -- the users -------------------------------------------------------------------------------
    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1

    def job_loop(self, sessions: list) -> None:
        while not self.stop.is_set():
            params = {"steps": 10, "step_seconds": round(random.uniform(0.2, 0.8), 2)}
            job = self.call(sessions, "post", "/api/background-jobs",
                            json={"job_type": "demo_countdown", "params": params}, expect=202)
            if job is None:
                time.sleep(1)
                continue
            with self.lock:
                self.jobs[job["job"]["id"]] = {"params": params}
            self.wait_end(sessions, job["job"]["id"])

    def wait_end(self, sessions: list, job_id: str) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            found = self.call(sessions, "get", f"/api/background-jobs/{job_id}", expect=200)
            if found is not None:
                self.observe(found["job"])
                if found["job"]["terminal"]:
                    return
            time.sleep(0.5)

    def observe(self, job: dict[str, Any]) -> None:
        """Keep the attempts a job showed (Redis forgets them when it restarts empty; PostgreSQL has none)."""
        if job.get("attempt", 1) > 1:
            with self.lock:
                self.attempts[job["id"]] = max(self.attempts.get(job["id"], []), job["attempts"] or [], key=len)

    def call(self, sessions: list, method: str, path: str, expect: int, **kwargs: Any) -> dict | None:
        """The request through the user's first instance, or the other when that one does not answer."""
        for session in random.sample(sessions, len(sessions)):
            try:
                response = getattr(session, method)(path, **kwargs)
            except Exception as exc:  # a killed worker cuts the connection: try the other instance
                self.error(f"{method.upper()} {type(exc).__name__}")
                continue
            if response.status_code == expect:
                return response.json()
            self.error(f"{method.upper()} {response.status_code}")
        return None

    # -- the faults ------------------------------------------------------------------------------
    def next_fault(self) -> str:
        """The next fault: drawn from a shuffled deck of every kind, so that a run of N faults strikes each kind
        N / 5 times in a random order (drawn independently, a 10-minute run once never stopped PostgreSQL)."""
        if not self.deck:
            self.deck = random.sample(FAULTS, len(FAULTS))
        return self.deck.pop()

    def strike(self) -> None:
        fault = self.next_fault()
        index = random.randrange(2)
        instance = self.instances[index]
        at = time.time()
        self.loads.append(os.getloadavg()[0])
        print(f"  {time.strftime('%H:%M:%S')} {fault}" + (f" (instance {index})" if "instance" in fault
                                                            or fault == "kill_worker" else ""), flush=True)
        if fault == "kill_worker":
            pids = instance.worker_pids()
            if pids:
                os.kill(random.choice(pids), signal.SIGKILL)
        elif fault == "kill_instance_workers":
            for pid in instance.worker_pids():
                os.kill(pid, signal.SIGKILL)
        elif fault == "sigterm_instance":
            instance.stop(signal.SIGTERM)
            self.instances[index] = LiveServer(self.env, workers=self.args.workers, port=instance.port).start(90)
            self.fleet.started.append(self.instances[index])
        elif fault == "redis_restart":
            self.backends.redis.restart()
        else:
            self.backends.postgres.stop()
            time.sleep(self.args.outage)  # the outage itself
            self.backends.postgres.start()
        self.faults.append((at, fault))

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        loops = [threading.Thread(target=self.job_loop, args=(sessions,), daemon=True) for sessions in self.users]
        for thread in loops:
            thread.start()
        end = time.monotonic() + self.args.seconds
        while time.monotonic() < end:
            time.sleep(random.uniform(0.5, 1.5) * self.args.every)
            if time.monotonic() < end:
                self.strike()
        self.stop.set()
        for thread in loops:
            thread.join(200)
        time.sleep(2)  # the last terminal events on their way to the streams
        return self.audit()

    def audit(self) -> dict[str, Any]:
        ids = list(self.jobs)
        rows = self.backends.rows(ids)
        with self.backends.redis.client() as client:
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(f"{self.env['EPM_KEY_PREFIX']}job:{job_id}")
            live = dict(zip(ids, pipe.execute(), strict=True))
        completed = [job_id for job_id in ids if live[job_id].get("status") == "completed"
                     and (rows.get(job_id) or {}).get("status") == "completed"]
        lost = [job_id for job_id in ids if job_id not in completed]
        for job in (job for pair in self.streams for stream in pair for job in stream.jobs()):
            self.observe(job)
        resumed = list(self.attempts)
        reap_times = []  # (seconds from the fault to the take-over, the fault)
        for job_id in resumed:
            for run in self.attempts[job_id]:
                taken = _timestamp(run["ended_at"])
                before = [(at, name) for at, name in self.faults if at <= taken]
                if before:
                    reap_times.append((taken - before[-1][0], before[-1][1]))
        by_fault: dict[str, list[float]] = {}
        for seconds, name in reap_times:
            by_fault.setdefault(name, []).append(seconds)
        times = sorted(seconds for seconds, _ in reap_times)
        return {"jobs_started": len(ids), "completed": len(completed), "resumed": len(resumed), "lost": len(lost),
                "duplicated": len(self.duplicated()), "max_time_to_reap_s": times[-1] if times else None,
                "p99_time_to_reap_s": times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)] if times else None,
                "take_overs": len(times),
                "time_to_reap_by_fault": {name: {"take_overs": len(found), "max_s": round(max(found), 3),
                                                 "median_s": round(sorted(found)[len(found) // 2], 3)}
                                          for name, found in sorted(by_fault.items())},
                "max_stream_gap_s": self.max_gap(), "max_stream_gap_ended": _clock(self.longest_gap()[1]),
                "faults": [f"{_clock(at)} {name}" for at, name in self.faults],
                "failed_requests": self.errors, "lost_examples": [(job_id, live[job_id].get("status"),
                                                                   (rows.get(job_id) or {}).get("status"))
                                                                  for job_id in lost[:5]]}

    def duplicated(self) -> set[str]:
        """Jobs an older attempt wrote after a newer one began (two runs at once), as their streams saw them."""
        found = set()
        for stream in (stream for pair in self.streams for stream in pair):
            newest: dict[str, tuple[int, int]] = {}
            for job in sorted(stream.jobs(), key=lambda j: j["seq"]):
                seq_attempt = newest.get(job["id"], (0, 0))
                if job.get("attempt", 1) < seq_attempt[1] and job["seq"] > seq_attempt[0]:
                    found.add(job["id"])
                newest[job["id"]] = (job["seq"], max(seq_attempt[1], job.get("attempt", 1)))
        return found

    def max_gap(self) -> float:
        return self.longest_gap()[0]

    def longest_gap(self) -> tuple[float, float | None]:
        """The longest a user's two streams went without a line, and when that gap ended (unix s)."""
        longest: tuple[float, float | None] = (0.0, None)
        for pair in self.streams:
            arrivals = sorted(event["at"] for stream in pair for event in stream.events)  # monotonic clock
            longest = max([longest, *((b - a, b) for a, b in zip(arrivals, arrivals[1:], strict=False))])
        gap, ended = longest
        return gap, None if ended is None else ended + time.time() - time.monotonic()

    def close(self) -> None:
        self.fleet.close()
        self.backends.close()


def _clock(at: float | None) -> str | None:
    return None if at is None else time.strftime("%H:%M:%S", time.localtime(at))


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--users", type=int, default=12, help="users, each running jobs back to back")
    parser.add_argument("--every", type=float, default=40, help="average seconds between two faults")
    parser.add_argument("--outage", type=float, default=10, help="seconds PostgreSQL stays down")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = options(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--seconds", type=int, default=600, help="how long new jobs keep starting")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    args, _ = parser.parse_known_args(argv)
    chaos = Chaos(args)
    try:
        chaos.start()
        print(f"chaos: {args.users} users on 2 instances of {args.workers} workers, {args.seconds}s, a fault every "
              f"~{args.every:g}s (heartbeat timeout {HEARTBEAT_TIMEOUT}s, upkeep every {PERIOD}s); "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        result = chaos.run()
    finally:
        chaos.close()
    result["load_average"] = os.getloadavg()[0]
    result["load_average_at_faults"] = [round(min(chaos.loads), 1), round(max(chaos.loads), 1)] if chaos.loads else None
    for name in ("jobs_started", "completed", "resumed", "lost", "duplicated", "take_overs", "max_time_to_reap_s",
                 "p99_time_to_reap_s", "max_stream_gap_s"):
        value = result[name]
        print(f"{name.replace('_', ' '):>22}: {value:.2f}" if isinstance(value, float) else
              f"{name.replace('_', ' '):>22}: {value}")
    for fault, figures in result["time_to_reap_by_fault"].items():
        print(f"{'':>22}  after {fault}: {figures['take_overs']} take-overs, median {figures['median_s']:.2f}s, "
              f"max {figures['max_s']:.2f}s")
    print(f"{'':>22}  the longest stream gap ended at {result['max_stream_gap_ended']}")
    print(f"{'load average':>22}: {result['load_average_at_faults']} at the faults, "
          f"{result['load_average']:.1f} at the end")
    print(json.dumps(result))
    return 1 if result["lost"] or result["duplicated"] else 0


if __name__ == "__main__":
    sys.exit(main())
