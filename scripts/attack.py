"""A scripted attack on a real gunicorn server (not run in CI): do the limits hold, and does nothing else break?

1. 50 wrong passwords for one account, then the right one (production's sign-in limits);
2. 200 parallel sign-ups from one address;
3. 1,000 job starts from one account (production's start limits);
4. /healthz latency on the same worker, idle and while 8 clients keep signing in with wrong passwords
   (limits off for this server, so every attempt reaches the password hash), interleaved in one run.

    .venv/bin/python scripts/attack.py            # embedded default
    REDIS_URL=... DATABASE_URL=... .venv/bin/python scripts/attack.py

Prints a table per part and, last, one JSON line with every figure.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Backends, Server, emit, percentile, print_table  # noqa: E402

PASSWORD = "attack-password"


def csrf_of(client: httpx.Client, path: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text)
    if not match:
        raise RuntimeError(f"no CSRF token on {path}")
    return match.group(1)


def sign_up(base_url: str, username: str) -> tuple[int, httpx.Client]:
    client = httpx.Client(base_url=base_url, timeout=30)
    token = csrf_of(client, "/signup")
    response = client.post("/signup", data={"username": username, "password": PASSWORD, "csrf_token": token})
    return response.status_code, client


def wrong_passwords(base_url: str, username: str, attempts: int) -> dict[str, object]:
    client = httpx.Client(base_url=base_url, timeout=30)
    token = csrf_of(client, "/login")
    statuses = Counter()
    first_refused = None
    for number in range(attempts):
        status = client.post("/login", data={"username": username, "password": f"guess-{number}",
                                             "csrf_token": token}).status_code
        statuses[status] += 1
        if status == 429 and first_refused is None:
            first_refused = number + 1
    right = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    client.close()
    return {"statuses": dict(statuses), "first_429_at": first_refused, "right_password": right.status_code,
            "retry_after": right.headers.get("Retry-After")}


def parallel_sign_ups(base_url: str, count: int) -> dict[int, int]:
    def one(number: int) -> int:
        status, client = sign_up(base_url, f"spam{number}x{uuid.uuid4().hex[:6]}")
        client.close()
        return status

    with ThreadPoolExecutor(max_workers=50) as pool:
        return dict(Counter(pool.map(one, range(count))))


def many_starts(base_url: str, client: httpx.Client, count: int) -> dict[int, int]:
    token = csrf_of(client, "/sessions")

    def one(_: int) -> int:
        return client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {"steps": 1}},
                           headers={"X-CSRFToken": token}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        return dict(Counter(pool.map(one, range(count))))


def healthz_under_hashing(base_url: str, seconds: float, hashers: int) -> dict[str, list[float]]:
    """/healthz latencies (ms), alternating one-second windows: idle, then with ``hashers`` sign-in loops."""
    loaded = threading.Event()
    stop = threading.Event()

    def hasher() -> None:
        client = httpx.Client(base_url=base_url, timeout=30)
        token = csrf_of(client, "/login")
        while not stop.is_set():
            if loaded.is_set():
                client.post("/login", data={"username": f"nobody{uuid.uuid4().hex[:6]}", "password": "wrong-guess",
                                            "csrf_token": token})
            else:
                time.sleep(0.01)
        client.close()

    threads = [threading.Thread(target=hasher, daemon=True) for _ in range(hashers)]
    for thread in threads:
        thread.start()
    samples: dict[str, list[float]] = {"idle": [], "hashing": []}
    probe = httpx.Client(base_url=base_url, timeout=30)
    end = time.monotonic() + seconds
    window = 0
    while time.monotonic() < end:
        phase = "hashing" if window % 2 else "idle"
        (loaded.set if phase == "hashing" else loaded.clear)()
        time.sleep(0.3)  # let the phase settle before measuring it
        window_end = time.monotonic() + 1.0
        while time.monotonic() < window_end:
            started = time.perf_counter()
            probe.get("/healthz")
            samples[phase].append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        window += 1
    stop.set()
    for thread in threads:
        thread.join(30)
    probe.close()
    return samples


def main() -> None:
    figures: dict[str, object] = {"load_average_before": os.getloadavg()[0]}
    with Backends("attack") as backends:
        figures["backends"] = backends.label
        # Production's limits (the defaults in epm/config.py), one worker.
        with Server(backends.server_env(EPM_RATE_LIMITS="1"), workers=1) as server:
            status, victim = sign_up(server.url, "victim")
            assert status == 302, status  # signed up and sent on
            guessing = wrong_passwords(server.url, "victim", 50)
            print_table("50 wrong passwords, then the right one (one address)", ["figure", "value"],
                        [["answers to the 50 guesses", str(guessing["statuses"])],
                         ["first 429 at guess", guessing["first_429_at"]],
                         ["the right password then", guessing["right_password"]],
                         ["its Retry-After (s)", guessing["retry_after"]]])
            signups = parallel_sign_ups(server.url, 200)
            print_table("200 parallel sign-ups (one address; 302 = created)", ["status", "count"],
                        sorted(signups.items()))
            starts = many_starts(server.url, victim, 1000)
            print_table("1,000 job starts from one account", ["status", "count"], sorted(starts.items()))
            victim.close()
            figures.update({"guesses": guessing, "signups": signups, "starts": starts})
        # Limits off, so every sign-in reaches the hash: the worst case for the event loop.
        with Server(backends.server_env(EPM_RATE_LIMITS="0"), workers=1) as server:
            samples = healthz_under_hashing(server.url, seconds=12, hashers=8)
            rows = [[phase, len(values), percentile(values, 50), percentile(values, 99), max(values)]
                    for phase, values in samples.items()]
            print_table("/healthz on the same worker (ms), idle and while 8 clients sign in with wrong passwords",
                        ["phase", "requests", "p50", "p99", "max"], rows)
            figures["healthz_ms"] = {phase: {"n": len(values), "p50": percentile(values, 50),
                                             "p99": percentile(values, 99)} for phase, values in samples.items()}
    figures["load_average_after"] = os.getloadavg()[0]
    print(f"\nload average: {figures['load_average_before']:.2f} before, {figures['load_average_after']:.2f} after")
    emit(figures)


if __name__ == "__main__":
    main()
