"""Memory: a process that has run a few hundred jobs holds nothing per finished job (issue 20).

What a soak found growing with every finished job is checked here directly, in one process: the
runner's tables, the metrics' per-job maps, a long-lived event stream's memory of what it sent, the
event hub's channels, the database sessions, the threads and the signal receivers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from epm import metrics, signals
from epm.extensions import db
from epm.jobs import sse
from tests.conftest import make_user
from tests.support import wait_for

USERS = 10
JOBS_PER_USER = 16
#: the user whose stream stays open runs more jobs than a stream keeps (``sse.STREAM_KEEP_ENDED``)
FOLLOWED_USER_JOBS = 56


def _run_jobs(app, counts: dict[str, int]) -> dict[str, list[str]]:
    """Run ``counts[user]`` demo jobs for each user, one at a time, users taking turns; every tenth fails.

    One at a time: concurrent writers make SQLite answer "database is locked" on a busy machine, and
    what is measured is what each job leaves behind, not how jobs overlap.
    """
    service = app.extensions["epm.jobs"]
    ids: dict[str, list[str]] = {user_id: [] for user_id in counts}
    for turn in range(max(counts.values())):
        for user_id, count in counts.items():
            if turn >= count:
                continue
            params = {"steps": 2, "step_seconds": 0}
            if turn % 10 == 9:
                params["fail_at"] = 2  # a failed job leaves nothing behind either
            with app.app_context():
                job = service.start("demo_countdown", user_id=user_id, params=params)
                db.session.remove()
            ids[user_id].append(job.id)
            wait_for(lambda job_id=job.id: job_id not in service.runner.running, timeout=30, interval=0.005,
                     message=f"job {job.id} to end")
    return ids


def _stream_memory(body: sse.EventStream) -> dict:
    """The map of what a suspended event stream sent (a local of its generator)."""
    frame = body._events.gi_frame
    assert frame is not None, "the stream ended"
    return frame.f_locals["sent"]


def _read_until_ended(body: sse.EventStream, job_ids: set[str], timeout: float = 30) -> None:
    """Read the stream until it sent the terminal event of every job in ``job_ids``."""
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    for chunk in body:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                job = json.loads(line[6:])
                if job["terminal"]:
                    pending.discard(job["id"])
        if not pending:
            return
        assert time.monotonic() < deadline, f"{len(pending)} jobs never ended on the stream"


def test_a_few_hundred_finished_jobs_leave_nothing_per_job_in_the_process(app, monkeypatch):
    service = app.extensions["epm.jobs"]
    hub = app.extensions["epm.hub"]
    # The production cap is 1,000 ended jobs; a small one shows the bound within a few hundred jobs.
    monkeypatch.setattr(metrics, "_delivered", sse.LatestSeqs(keep_ended=16, limit=10_000))
    receivers = {name: len(getattr(signals, name).receivers) for name in
                 ("job_started", "job_saved", "job_finished", "job_stopped", "event_delivered")}
    threads_before = {thread.ident for thread in threading.enumerate()}
    users = [str(make_user(app, f"mem{uuid.uuid4().hex[:8]}").id) for _ in range(USERS)]

    # One user's event stream stays open through every job, like a browser tab left open for days.
    followed = users[0]
    body = sse.stream(hub, [service.store.user_channel(followed)], lambda: service.recent(followed))
    counts = {user_id: FOLLOWED_USER_JOBS if user_id == followed else JOBS_PER_USER for user_id in users}
    ids = _run_jobs(app, counts)
    assert {user_id: len(job_ids) for user_id, job_ids in ids.items()} == counts
    assert FOLLOWED_USER_JOBS > sse.STREAM_KEEP_ENDED

    _read_until_ended(body, set(ids[followed]))
    sent = _stream_memory(body)
    assert len(sent) <= sse.STREAM_KEEP_ENDED, f"the stream remembers {len(sent)} jobs"
    assert set(sent) <= set(ids[followed][-sse.STREAM_KEEP_ENDED:])  # the newest ended ones
    body.close()

    # The runner and the metrics let go of every job.
    assert service.runner.running == []
    assert service.runner._threads == {}
    assert metrics._running == {}
    assert len(metrics._delivered) <= 16
    # No metric is labelled per job.
    all_ids = {job_id for job_ids in ids.values() for job_id in job_ids}
    labelled = {value for family in REGISTRY.collect() for sample in family.samples
                for value in sample.labels.values()}
    assert not labelled & all_ids
    # The hub follows no channel once its last stream closed.
    assert hub._subs == {} and hub._ready == {} and hub.streams == 0
    # Every job's database session was removed with its app context.
    assert db.session.registry.registry == {}
    # Each job's threads (runner and pulse) have ended.
    wait_for(lambda: not [thread for thread in threading.enumerate()
                          if thread.ident not in threads_before and thread.name.startswith(("job-", "pulse-"))],
             timeout=10, message="the jobs' threads to end")
    assert receivers == {name: len(getattr(signals, name).receivers) for name in receivers}


@pytest.mark.parametrize("keep_ended", [3])
def test_a_stream_forgets_ended_jobs_beyond_its_cap_and_keeps_running_ones(keep_ended):
    seqs = sse.LatestSeqs(keep_ended=keep_ended)
    seqs.record(sse.Message(job_id="running", seq=1, terminal=False, wire=b""))
    for index in range(10):
        seqs.record(sse.Message(job_id=f"job{index}", seq=index + 2, terminal=False, wire=b""))
        seqs.record(sse.Message(job_id=f"job{index}", seq=index + 3, terminal=True, wire=b""))
    assert seqs == {"running": 1, "job7": 10, "job8": 11, "job9": 12}


def test_the_process_wide_map_drops_the_first_recorded_beyond_its_limit():
    seqs = sse.LatestSeqs(keep_ended=100, limit=3)
    for index in range(5):
        seqs.record(sse.Message(job_id=f"job{index}", seq=index, terminal=False, wire=b""))
    assert list(seqs) == ["job2", "job3", "job4"]


def _soak_module():
    import importlib
    import sys

    from tests.support import ROOT

    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module("soak")


def test_the_soak_verdict_tells_a_leak_of_600_bytes_per_job_from_a_heap_that_moves_and_stays():
    import random

    soak = _soak_module()

    def grew(points) -> bool:
        return soak.grew(soak.rss_trend(points), soak.RSS_LIMIT_MB_PER_HOUR)

    for seed in range(20):
        rng = random.Random(seed)
        # 30 minutes sampled every 10 s; the heap sits on one of three levels 256 KB apart (the size of the
        # steps seen in real soaks) and moves between them now and then: noise that persists, no trend.
        level, flat, leaking = 0, [], []
        for index in range(180):
            if rng.random() < 0.05:
                level = rng.choice((0, 1, 2)) * 2 ** 18
            at = index * 10.0
            flat.append((at, 200 * 2 ** 20 + level))
            leaking.append((at, 200 * 2 ** 20 + level + at * 18 * 600))  # 18 jobs/s x 600 bytes: 37 MB/h
        assert not grew(flat), f"seed {seed}: a level heap judged as growing"
        assert grew(leaking), f"seed {seed}: a leak judged as flat"
    assert soak.rss_trend(flat[:5]) is None  # too few samples to judge
