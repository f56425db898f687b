"""Capacity of one instance: many concurrent real jobs, a burst of sign-ups, one account's flood of starts.

One instance (gunicorn, 2 gevent workers) of this checkout and one of a baseline commit (by default the
code before running jobs stopped holding database connections and accounts got a fair share), each on
its own database and key prefix, measured in the same run, size by size, this code first:

1. **Sign-up burst:** ``--accounts`` parallel sign-ups, then as many parallel sign-ins, while a prober
   asks ``/healthz`` every 20 ms: errors, p99 latency, ``/healthz`` p99 on the same workers, and the
   gevent loop's longest lag (``epm_event_loop_lag_max_seconds``, this code only).
2. **Concurrent jobs:** for each N of ``--sizes``, N real ``epm_generation`` jobs (stages paced at
   ``--stage-seconds``), started in parallel across the accounts (at most 5 each): peak PostgreSQL
   connections of the run's database (``pg_stat_activity``, sampled every 100 ms) against the pool's
   size, pool timeouts in the server log, failed jobs, p99 start latency, p99 event delay (each event's
   arrival on the account's SSE stream against its write, the seq clock), server CPU seconds and RSS
   growth per job.
3. **One account's flood:** one account starts ``--flood`` jobs in sessions of its own while other
   accounts start one each: how many ran, how many were refused (by status and code), and the other
   accounts' answers.

Needs REDIS_URL and DATABASE_URL (real servers: PostgreSQL's own view of connections is the point).
Prints tables, then one JSON line.

    python scripts/bench_capacity.py                      # sizes 50, 200, 1000 (about 15 minutes)
    python scripts/bench_capacity.py --sizes 20 --accounts 20 --stage-seconds 0.2 --flood 30   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, Backends, Server, emit, fmt, percentile, print_table, rss_kb  # noqa: E402

BASELINE = "4ed2d8c"  # the last commit before this capacity work
PASSWORD = "capacity-password-1"
#: pool of one worker on PostgreSQL (epm/config.py defaults): EPM_DB_POOL_SIZE + EPM_DB_MAX_OVERFLOW
POOL_PER_WORKER = 5 + 5
WORKERS = 2


class Account:
    """A browser-like client: its cookies, its CSRF token, and its one event stream's observations."""

    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=60, follow_redirects=True)
        self.name = f"cap{uuid.uuid4().hex[:10]}"
        self.csrf = ""
        self.delays: list[float] = []
        self.ended: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def _token(self, path: str) -> None:
        match = re.search(r'name="csrf-token" content="([^"]+)"', self.http.get(path).text)
        if not match:
            raise RuntimeError(f"no csrf-token on {path}")
        self.csrf = match.group(1)

    def signup(self) -> tuple[float, int]:
        self._token("/signup")
        started = time.perf_counter()
        response = self.http.post("/signup", data={"username": self.name, "password": PASSWORD,
                                                   "csrf_token": self.csrf})
        return time.perf_counter() - started, response.status_code

    def signin(self) -> tuple[float, int]:
        self.http.cookies.clear()
        self._token("/login")
        started = time.perf_counter()
        response = self.http.post("/login", data={"username": self.name, "password": PASSWORD,
                                                  "csrf_token": self.csrf})
        elapsed = time.perf_counter() - started
        self._token("/")
        return elapsed, response.status_code

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body, headers={"X-CSRFToken": self.csrf})

    def follow(self) -> None:
        """Read the account's event stream until told to stop: note every event's delay and every ending."""
        while not self.stopping:
            try:
                with self.http.stream("GET", "/api/background-jobs/events", timeout=httpx.Timeout(60, read=30)) as r:
                    data = []
                    for line in r.iter_lines():
                        if self.stopping:
                            return
                        if line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            self._event(json.loads("\n".join(data)), time.time())
                            data = []
            except (httpx.HTTPError, json.JSONDecodeError):
                time.sleep(0.5)

    def _event(self, job: dict[str, Any], now: float) -> None:
        with self.lock:
            if job["id"] in self.ended:
                return
            if not job.get("terminal"):
                self.delays.append(now - int(job["seq"]) / 1000)
            else:
                self.ended[job["id"]] = job


class Instance:
    """One server of one checkout on its own backends, with its accounts."""

    def __init__(self, name: str, root: Path, stage_seconds: float, extra_env: dict[str, str]):
        self.name = name
        self.root = root
        self.backends = Backends(f"cap{name}")
        self.backends.open(root=root)
        env = self.backends.server_env(EPM_STAGE_SECONDS=str(stage_seconds), EPM_HEARTBEAT_TIMEOUT="30",
                                       EPM_DEMO="1", **extra_env)
        env["PYTHONPATH"] = str(root)
        self.server = Server(env, WORKERS, root=root).start()
        self.accounts: list[Account] = []
        self.readers: list[threading.Thread] = []

    def close(self) -> None:
        for account in self.accounts:
            account.stopping = True
        self.server.stop()
        for account in self.accounts:
            account.http.close()
        self.backends.close()

    def connections(self) -> tuple[int, int]:
        """(open, busy) connections of the run's database, as PostgreSQL sees them."""
        import psycopg

        with psycopg.connect(self.backends.admin_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*), count(*) FILTER (WHERE state <> 'idle') FROM pg_stat_activity "
                               "WHERE datname = %s AND backend_type = 'client backend'",
                               (self.backends.db_name,)).fetchone()
        return int(row[0]), int(row[1])

    def loop_lag_max(self, name: str = "epm_event_loop_lag_max_seconds") -> float | None:
        text = httpx.get(self.server.url + "/metrics", timeout=30).text
        match = re.search(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else None

    def loop_block_max(self) -> float | None:
        return self.loop_lag_max("epm_event_loop_block_max_seconds")

    def loop_blocks(self) -> dict[str, float]:
        """The block histogram now, summed over the workers: upper bound (``le``) -> runs at most that long."""
        text = httpx.get(self.server.url + "/metrics", timeout=30).text
        return {le: float(count) for le, count in
                re.findall(r'^epm_event_loop_block_seconds_bucket\{le="([^"]+)"\} ([0-9.e+-]+)$', text, re.MULTILINE)}

    def log_count(self, pattern: str) -> int:
        return self.server.log_path.read_text(errors="replace").count(pattern)


def burst(instance: Instance, count: int) -> dict[str, Any]:
    """``count`` parallel sign-ups then sign-ins, with /healthz probed every 20 ms meanwhile."""
    accounts = [Account(instance.server.url) for _ in range(count)]
    probes: list[float] = []
    probe_errors = [0]
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=instance.server.url, timeout=10) as client:
            while not done.is_set():
                started = time.perf_counter()
                try:
                    client.get("/healthz", headers={"Connection": "close"}).raise_for_status()
                    probes.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    probe_errors[0] += 1
                time.sleep(0.02)

    # Warm each worker first (templates compiled at their first render are not what is measured).
    for _ in range(6):
        for path in ("/signup", "/login", "/healthz"):
            httpx.get(instance.server.url + path, headers={"Connection": "close"}, timeout=30)
    blocks_before = instance.loop_blocks()
    prober = threading.Thread(target=probe)
    prober.start()
    with ThreadPoolExecutor(count) as pool:
        signups = list(pool.map(lambda account: account.signup(), accounts))
        signins = list(pool.map(lambda account: account.signin(), accounts))
    done.set()
    prober.join()
    blocks_after = instance.loop_blocks()
    blocks = {le: blocks_after.get(le, 0) - blocks_before.get(le, 0) for le in blocks_after}
    instance.accounts = [account for account, (_, status) in zip(accounts, signins, strict=True) if status == 200]
    for account in instance.accounts:
        reader = threading.Thread(target=account.follow, daemon=True)
        reader.start()
        instance.readers.append(reader)
    failures: dict[str, int] = {}
    for kind, answers in (("sign-up", signups), ("sign-in", signins)):
        for _, status in answers:
            if status != 200:
                failures[f"{kind} {status}"] = failures.get(f"{kind} {status}", 0) + 1
    return {"failures": failures, "signup_errors": sum(status != 200 for _, status in signups),
            "signin_errors": sum(status != 200 for _, status in signins),
            "signup_p99_ms": 1000 * (percentile([t for t, _ in signups], 99) or 0),
            "signin_p99_ms": 1000 * (percentile([t for t, _ in signins], 99) or 0),
            "healthz_p99_ms": 1000 * (percentile(probes, 99) or 0), "healthz_probes": len(probes),
            "healthz_errors": probe_errors[0], "loop_lag_max_ms": _ms(instance.loop_lag_max()),
            "loop_block_max_ms": _ms(instance.loop_block_max()),
            # runs of a greenlet of 1 ms or more during the burst, and those over 20 ms (None: not measured)
            "blocks_1ms": blocks.get("+Inf"), "blocks_over_20ms": (blocks["+Inf"] - blocks["0.02"]) if blocks else None}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def sessions_for(account: Account, count: int, tag: str) -> list[int]:
    ids = []
    for number in range(count):
        response = account.post("/api/sessions", {
            "name": f"{tag} {number}", "business": "A specialty coffee chain with cafés and wholesale customers.",
            "objectives": ["Open ten cafés", "Launch a mobile order-ahead app", "Grow wholesale by 35%"],
            "team_size": 18})
        response.raise_for_status()
        ids.append(response.json()["session"]["id"])
    return ids


def jobs_run(instance: Instance, n: int, stage_seconds: float) -> dict[str, Any]:
    """N concurrent epm_generation jobs across the accounts (at most 5 each), followed to their end."""
    per_account = min(5, math.ceil(n / len(instance.accounts)))
    plan: list[tuple[Account, int]] = []
    with ThreadPoolExecutor(32) as pool:
        needed = [min(per_account, n - i * per_account) for i in range(math.ceil(n / per_account))]
        made = pool.map(lambda pair: [(pair[0], sid) for sid in sessions_for(pair[0], pair[1], f"N{n}")],
                        zip(instance.accounts, needed, strict=False))
        for pairs in made:
            plan.extend(pairs)
    for account in instance.accounts:
        with account.lock:
            account.delays.clear()
    rss_before = sum(rss_kb(pid) for pid in instance.server.worker_pids())
    cpu_before = _cpu(instance.server.pids())
    timeouts_before = instance.log_count("QueuePool limit")
    peak = {"open": 0, "busy": 0, "rss_kb": rss_before}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            opened, busy = instance.connections()
            peak["open"], peak["busy"] = max(peak["open"], opened), max(peak["busy"], busy)
            peak["rss_kb"] = max(peak["rss_kb"], sum(rss_kb(pid) for pid in instance.server.worker_pids()))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started_at = time.monotonic()

    def start(pair: tuple[Account, int]) -> tuple[float, int, str | None, Account]:
        account, session_id = pair
        began = time.perf_counter()
        try:
            response = account.post(f"/api/sessions/{session_id}/epm_generation")
        except httpx.HTTPError:
            return time.perf_counter() - began, 0, None, account
        job_id = response.json().get("job", {}).get("id") if response.status_code == 202 else None
        return time.perf_counter() - began, response.status_code, job_id, account

    with ThreadPoolExecutor(100) as pool:
        starts = list(pool.map(start, plan))
    accepted = [(job_id, account) for _, status, job_id, account in starts if status == 202]
    deadline = time.monotonic() + 40 * stage_seconds + 180

    def ended() -> list[dict[str, Any]]:
        return [account.ended[job_id] for job_id, account in accepted if job_id in account.ended]

    while len(ended()) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.5)
    elapsed = time.monotonic() - started_at
    sampling.set()
    sampler.join()
    finished = ended()
    delays = [delay for account in instance.accounts for delay in account.delays]
    statuses: dict[str, int] = {}
    for job in finished:
        key = job["status"] if job["status"] == "completed" else f"{job['status']}/{job.get('error_code')}"
        statuses[key] = statuses.get(key, 0) + 1
    cpu = _cpu(instance.server.pids()) - cpu_before
    return {"n": n, "started": len(accepted), "refused": len(starts) - len(accepted),
            "completed": statuses.get("completed", 0), "failed": len(finished) - statuses.get("completed", 0),
            "unfinished": len(accepted) - len(finished), "outcomes": statuses,
            "pg_open_peak": peak["open"], "pg_busy_peak": peak["busy"], "pool_limit": POOL_PER_WORKER * WORKERS,
            "pool_timeouts": instance.log_count("QueuePool limit") - timeouts_before,
            "start_p99_ms": 1000 * (percentile([t for t, *_ in starts], 99) or 0),
            "event_delay_p50_ms": 1000 * (percentile(delays, 50) or 0),
            "event_delay_p99_ms": 1000 * (percentile(delays, 99) or 0), "events": len(delays),
            "seconds": elapsed, "cpu_ms_per_job": 1000 * cpu / max(1, len(accepted)),
            "rss_kb_per_job": (peak["rss_kb"] - rss_before) / max(1, len(accepted))}


def _cpu(pids: list[int]) -> float:
    from benchlib import cpu_seconds

    return cpu_seconds(pids)


def flood(instance: Instance, count: int) -> dict[str, Any]:
    """One account starts ``count`` jobs in sessions of its own; five other accounts start one each."""
    flooder, others = instance.accounts[0], instance.accounts[1:6]
    own = sessions_for(flooder, count, "flood")
    theirs = [sessions_for(account, 1, "other")[0] for account in others]
    codes: dict[str, int] = {}
    lock = threading.Lock()

    def start(session_id: int) -> None:
        response = flooder.post(f"/api/sessions/{session_id}/epm_generation")
        code = str(response.status_code)
        if response.status_code != 202:
            code += "/" + str(response.json().get("error", {}).get("code"))
        with lock:
            codes[code] = codes.get(code, 0) + 1

    def other(pair: tuple[Account, int]) -> tuple[int, float]:
        began = time.perf_counter()
        response = pair[0].post(f"/api/sessions/{pair[1]}/epm_generation")
        return response.status_code, time.perf_counter() - began

    with ThreadPoolExecutor(50) as pool:
        flooding = [pool.submit(start, session_id) for session_id in own]
        answers = list(pool.map(other, zip(others, theirs, strict=True)))
        for future in flooding:
            future.result()
    return {"flood": count, "flood_answers": codes, "others_202": sum(status == 202 for status, _ in answers),
            "others": len(answers), "others_max_ms": 1000 * max(t for _, t in answers)}


def baseline_checkout(ref: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="epm-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,200,1000", help="concurrent jobs per step (comma-separated)")
    parser.add_argument("--accounts", type=int, default=200, help="accounts signed up in the burst")
    parser.add_argument("--stage-seconds", type=float, default=2.0, help="pacing of each operation stage")
    parser.add_argument("--flood", type=int, default=1000, help="starts from one account")
    parser.add_argument("--baseline-ref", default=BASELINE, help="the commit measured beside this checkout "
                                                                  "('none' to skip)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for both servers (repeatable)")
    args = parser.parse_args()
    if not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL")):
        print("bench_capacity needs REDIS_URL and DATABASE_URL (real Redis and PostgreSQL)", file=sys.stderr)
        return 2
    sizes = [int(size) for size in args.sizes.split(",")]
    extra = dict(item.split("=", 1) for item in args.env)
    variants = [("this", ROOT)]
    checkout = None
    if args.baseline_ref != "none":
        checkout = baseline_checkout(args.baseline_ref)
        variants.append((f"baseline {args.baseline_ref}", checkout))
    print(f"bench_capacity: {WORKERS} gevent workers per instance, sizes {sizes}, {args.accounts} accounts, "
          f"stages {args.stage_seconds}s; load average {os.getloadavg()[0]:.2f}", flush=True)
    instances: list[Instance] = []
    figures: dict[str, Any] = {"load_avg_start": os.getloadavg()[0]}
    try:
        for name, root in variants:
            instances.append(Instance(name, root, args.stage_seconds, extra))
        bursts = {instance.name: burst(instance, args.accounts) for instance in instances}
        print_table("Sign-up burst", ["instance", "sign-up errors", "sign-in errors", "sign-up p99 ms",
                                      "sign-in p99 ms", "/healthz p99 ms", "loop lag max ms",
                                      "longest block ms", "blocks > 20 ms in the burst"],
                    [(name, b["signup_errors"], b["signin_errors"], fmt(b["signup_p99_ms"]), fmt(b["signin_p99_ms"]),
                      fmt(b["healthz_p99_ms"]), fmt(b["loop_lag_max_ms"]), fmt(b["loop_block_max_ms"]),
                      fmt(b["blocks_over_20ms"], 0))
                     for name, b in bursts.items()])
        figures["burst"] = bursts
        runs: dict[str, list[dict[str, Any]]] = {instance.name: [] for instance in instances}
        for n in sizes:
            for instance in instances:
                print(f"  {instance.name}: {n} jobs (load average {os.getloadavg()[0]:.2f})", flush=True)
                runs[instance.name].append(jobs_run(instance, n, args.stage_seconds))
        print_table("Concurrent epm_generation jobs", ["instance", "N", "started", "completed", "failed",
                                                       "unfinished", "PG conns peak (busy)", "pool timeouts",
                                                       "start p99 ms", "event p99 ms", "CPU ms/job", "RSS KB/job"],
                    [(name, r["n"], r["started"], r["completed"], r["failed"], r["unfinished"],
                      f"{r['pg_open_peak']} ({r['pg_busy_peak']})", r["pool_timeouts"], fmt(r["start_p99_ms"]),
                      fmt(r["event_delay_p99_ms"]), fmt(r["cpu_ms_per_job"]), fmt(r["rss_kb_per_job"]))
                     for name, rows in runs.items() for r in rows])
        figures["jobs"] = runs
        figures["flood"] = flood(instances[0], args.flood)
        print(f"One account, {args.flood} starts: {figures['flood']['flood_answers']}; other accounts "
              f"{figures['flood']['others_202']}/{figures['flood']['others']} started "
              f"(slowest {figures['flood']['others_max_ms']:.0f} ms)")
        figures["loop_lag_max_ms"] = _ms(instances[0].loop_lag_max())
        figures["loop_block_max_ms"] = _ms(instances[0].loop_block_max())
        figures["load_avg_end"] = os.getloadavg()[0]
    finally:
        for instance in instances:
            instance.close()
        if checkout is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                           capture_output=True)
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
