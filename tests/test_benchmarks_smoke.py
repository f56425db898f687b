"""The benchmarks in scripts/ still run: each at tiny sizes, ending with its JSON line of figures.

No timing is asserted (machines differ); only that each benchmark finishes, names its figures, and
that the figures which do not depend on timing hold (database writes per job, statements per 304).
They run on the real backends when REDIS_URL/DATABASE_URL are set, else on the embedded default.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.live


def run_benchmark(script: str, *args: str, timeout: float = 120) -> dict:
    completed = subprocess.run([sys.executable, f"scripts/{script}", *args], cwd=ROOT, capture_output=True,
                               text=True, timeout=timeout)
    assert completed.returncode == 0, f"{script} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    last = completed.stdout.strip().splitlines()[-1]
    return json.loads(last)


def test_progress_benchmark_reports_costs_writes_and_coalescing():
    figures = run_benchmark("bench_progress.py", "--rounds", "1", "--calls", "20", "--naive-every", "4",
                            "--jobs", "1", "--steps", "5", "--loop", "200")
    for key in ("ping_us", "save_us", "update_us", "update_vs_ping", "store_update_us", "update_cpu_us",
                "naive_update_us", "db_writes_per_job",
                "naive_db_writes_per_job", "coalesced_events", "coalesced_redis_commands", "coalesced_wall_ms"):
        assert isinstance(figures[key], int | float), key
    assert figures["db_writes_per_job"] == 2
    assert figures["naive_db_writes_per_job"] == 5 + 2
    assert figures["update_db_statements"] == 0


def test_list_benchmark_reports_both_answers_and_a_304_costs_no_statement():
    figures = run_benchmark("bench_list.py", "--rounds", "1", "--seconds", "0.5", "--concurrency", "2",
                            "--finished", "50", "--counted", "5", "--pollers", "3", "--poll_interval", "0.2",
                            "--poll_seconds", "0.6", "--move_every", "0.3")
    for key in ("rps_200", "rps_304", "rps_ratio", "rps_floor", "db_statements_per_200"):
        assert isinstance(figures[key], int | float), key
    assert figures["db_statements_per_304"] == 0
    assert figures["listed"] == 20
    assert figures["poll_errors"] == 0 and figures["poll_bytes_since"] < figures["poll_bytes_etag"]


def test_push_benchmark_reports_latency_polling_and_idle_connections():
    figures = run_benchmark("bench_push.py", "--users", "4", "--jobs", "2", "--clients", "8", "--seconds", "1",
                            "--poll-seconds", "1", "--poll-interval", "0.5", "--idle", "20", "--idle-seconds", "1",
                            "--heartbeat", "0.5", "--processes", "1", "--skip-peers", timeout=180)
    for key in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms", "poll_freshness_ms", "events_lost",
                "kb_per_connection", "server_cpu_pct", "server_rss_mb"):
        assert isinstance(figures[key], int | float), key
    assert figures["clients"] == 8 and figures["jobs"] == 2
    assert figures["idle_connections"] == 20 and figures["idle_failed_opens"] == 0
    assert figures["errors"] == 0
    assert isinstance(figures["server_cpu_us_per_event"], float)
