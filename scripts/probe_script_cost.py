"""Probe: what the progress write's Lua script costs Redis, beside a PING, on a bare socket.

bench_progress.py compares the whole progress update with a redis-py ``PING``. On the 2-core VMs this project
is measured on, the round trip itself moves by a factor of up to eight from one minute to the next (how
fast an idle vCPU wakes), so the ratio moves with it. This probe takes redis-py and epm's client code out:
one socket, commands packed once, sent in turn (``--turns`` of each), the median round trip of each:

- ``PING``; ``HSET`` of the four fields a report changes; one ``PUBLISH`` of a 600-byte event to a subscriber;
- ``EVALSHA`` of epm's progress script (``epm.jobs.store._PROGRESS_LUA``) as in production (the user's channel
  followed by a ``redis-cli SUBSCRIBE``, the job's own channel by nobody) and with neither followed;
- the script's commands in a ``MULTI`` without the script, and an empty script.

Keys are under a prefix of the probe's own on REDIS_URL's server (default 127.0.0.1:6379) and deleted after.

    .venv/bin/python scripts/probe_script_cost.py [--turns 3000]

Prints a line per command, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from epm.jobs.store import _PROGRESS_LUA  # noqa: E402


def pack(*args: object) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _read_lines(sock: socket.socket, lines: int) -> None:
    """Read until ``lines`` reply lines are in (every reply here is short)."""
    data = sock.recv(65536)
    while data.count(b"\r\n") < lines:
        data += sock.recv(65536)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--turns", type=int, default=3000)
    args = parser.parse_args()
    url = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    client = redis.Redis(host=host, port=port, decode_responses=True)
    prefix = f"probe:{uuid.uuid4().hex[:8]}:"
    job, version, followed, unfollowed = (prefix + name for name in ("job", "version", "followed", "nobody"))
    client.hset(job, mapping={"status": "running", "attempt": "1"})
    sha = client.script_load(_PROGRESS_LUA)
    empty = client.script_load("return 1")
    # As in production: the user's channel has a subscriber (a process's event hub), the job's own has none.
    subscriber = subprocess.Popen(["redis-cli", "-h", host, "-p", str(port), "SUBSCRIBE", followed],
                                  stdout=subprocess.DEVNULL)
    payload = "x" * 600
    report = (5, "Step 5 of 10", 1764547200000, "2026-12-01T00:00:00.000Z", 1)
    multi = "MULTI of the script's writes, as in production"
    commands = {
        "PING": pack("PING"),
        "HSET of 4 fields": pack("HSET", job, "progress", 5, "message", "Step 5 of 10", "seq", 1764547200000,
                                 "updated_at", "2026-12-01T00:00:00.000Z"),
        "PUBLISH to a subscriber": pack("PUBLISH", followed, payload),
        "EVALSHA progress script, as in production": pack("EVALSHA", sha, 2, job, version, unfollowed + "1",
                                                          followed, payload, *report),
        "EVALSHA progress script, nobody follows": pack("EVALSHA", sha, 2, job, version, unfollowed + "1",
                                                        unfollowed + "2", payload, *report),
        # The script's calls without the script: what Lua adds (the checks of status and attempt aside).
        multi: b"".join([
            pack("MULTI"), pack("HMGET", job, "status", "attempt"),
            pack("HSET", job, "progress", 5, "message", "Step 5 of 10", "seq", 1764547200000, "updated_at",
                 "2026-12-01T00:00:00.000Z"),
            pack("INCR", version), pack("PUBLISH", unfollowed + "1", payload), pack("PUBLISH", followed, payload),
            pack("EXEC")]),
        "EVALSHA of an empty script": pack("EVALSHA", empty, 0),
    }
    # Reply lines of each: one, but the MULTI's "+OK", five "+QUEUED", then EXEC's "*5" with HMGET's array
    # of two bulk strings (5 lines) and four integers.
    lines = {name: 1 for name in commands} | {multi: 1 + 5 + 1 + 5 + 4}
    try:
        time.sleep(0.5)  # the subscriber's SUBSCRIBE is in
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times: dict[str, list[float]] = {name: [] for name in commands}
        clock = time.perf_counter
        for _ in range(args.turns):
            for name, packed in commands.items():
                start = clock()
                sock.sendall(packed)
                _read_lines(sock, lines[name])
                times[name].append(clock() - start)
        sock.close()
    finally:
        subscriber.kill()
        client.delete(job, version)
    figures = {name: round(statistics.median(values) * 1e6, 1) for name, values in times.items()}
    for name, value in figures.items():
        print(f"{name:42s} {value:8.1f} µs  ({value / figures['PING']:.2f}x PING)")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(json.dumps({"redis_version": client.info("server")["redis_version"], "turns": args.turns,
                      "load": f"load average {load}", **{f"{name} µs": value for name, value in figures.items()}},
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
