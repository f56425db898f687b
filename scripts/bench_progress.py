"""Benchmark: what one progress update costs, next to a bare Redis PING and to writing it to the database.

Measured through the real code: ``JobStore.save`` and ``ctx.progress()`` run inside a job that the
real ``JobService`` started, on the run's Redis and database (``REDIS_URL``/``DATABASE_URL``, or the
embedded default). Beside them, in the same rounds: a ``PING`` on the same Redis client (the floor of
one round trip) and the naive design, ``UPDATE background_jobs SET progress=..., message=...``
and ``COMMIT`` per update. Then the database writes of whole jobs (ours: the insert and the terminal
state; naive: one more per update), and what coalescing does to a job that calls ``progress()``
10,000 times in a tight loop.

The per-call costs are measured twice: with the machine otherwise idle, then beside a process spinning on
one core (``--no-busy`` leaves that out). On the VMs this runs on, a round trip with the vCPUs idle includes
the wake-up of one (a bare ``PING`` 60 µs against 6.5 µs with them awake; scripts/probe_script_cost.py),
which hides the fixed costs of a write; a busy server's vCPUs are awake.

    .venv/bin/python scripts/bench_progress.py [--quick] [--no-busy]

Prints tables, then one JSON line of figures. See docs/performance.md.
"""

from __future__ import annotations

import sys

if "--gevent" in sys.argv:  # as in a gunicorn gevent worker: patched before anything opens a socket
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import subprocess
import threading
import time
import uuid
from typing import Any

import benchlib
from benchlib import Backends, median, print_table, statement_counter

from epm.jobs import steps as job_steps
from epm.jobs.job import Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.registry import get_operation, operation
from epm.jobs.store import Guard
from epm.operations.program import generate_program  # noqa: F401 (registers epm_generation, whose steps are used)

SIZES = {
    # rounds of (ping, save, progress, ..., naive); turns per round; a naive update every n-th turn;
    # whole jobs for the write count and their progress calls; calls of the tight loop
    "quick": {"rounds": 3, "calls": 300, "naive_every": 5, "jobs": 3, "steps": 50, "loop": 10_000},
    "full": {"rounds": 5, "calls": 1_000, "naive_every": 5, "jobs": 20, "steps": 100, "loop": 10_000},
}


# -- the jobs the benchmark runs (through the real JobService and Runner) ----------------------------
#: The measured jobs are shaped as an EPM generation in its third step, with an estimate from earlier runs: the
#: event a report publishes carries the timeline and the estimate (1.5 KB), not a bare job's (0.4 KB).
EPM_STEPS = get_operation("epm_generation").steps
AT_STEP = 2


def epm_shaped(job: Job, estimate: dict[str, Any]) -> Job:
    """``job`` with an EPM generation's timeline, in its third step, and ``estimate``."""
    job.timeline = job_steps.plan(EPM_STEPS)
    for name in EPM_STEPS[:AT_STEP + 1]:
        job_steps.advance(job, name)
    job.estimate = estimate
    return job


def seed_history(app, user_id: str, job_type: str) -> None:
    """Earlier runs of ``job_type`` for the user, so that its runs have an estimate (steps.load_estimate)."""
    from epm.jobs import current_jobs

    with app.app_context():
        store = current_jobs().store
        runs = [json.dumps([sum(durations), *durations]) for durations in
                ([2.5 + 0.1 * run] * len(EPM_STEPS) for run in range(job_steps.OWN_RUNS + 2))]
        store.redis.lpush(store.user_history_key(user_id, job_type), *runs)


@operation("bench_progress_costs", title="Progress cost probe", requires_session=False, steps=EPM_STEPS)
def cost_probe(ctx) -> dict[str, Any]:
    """Times each design's progress write call by call in turn, with unrelated work between any two calls.

    In each turn: PING, the progress update (``ctx.progress()``, which records it in memory, then the
    job's pulse's write of it, ``LiveJob._write``: the store's Lua script), the store's update alone
    (``JobStore.save_progress``), the whole-state write of a status change (``JobStore.write``), RQ's
    ``save_meta`` and Celery's ``update_state`` on the same Redis, and every ``naive_every``-th turn the
    naive ``UPDATE ...; COMMIT``. The pulse writes in a thread of its own; here its write is called in the
    measuring thread, right after the report (the pulse's own pace is set past the run, so it writes no
    progress itself): measured asynchronously, the write would land in the next design's turn. Calls
    alternate so all share the same conditions (a round trip takes 25-80 µs here depending on whether the
    CPUs are awake); the unrelated work between them leaves caches as a real request does; medians leave
    out preemptions.
    """
    from flask import current_app
    from sqlalchemy import insert, update

    from epm.extensions import db
    from epm.jobs import current_jobs
    from epm.jobs.models import BackgroundJob

    params = ctx.params
    client = current_app.extensions["redis"]
    store = current_jobs().store
    now = iso(utcnow())
    shadow = Job(id=uuid.uuid4().hex, job_type="bench_progress_costs", user_id=ctx.user_id, title="Shadow",
                 status=JobStatus.RUNNING, created_at=now, started_at=now)
    # The status changes' own job: a whole write drops the job's progress template (its state changed), and a
    # job's reports follow reports, not a whole write each.
    whole = Job(id=uuid.uuid4().hex, job_type="bench_progress_costs", user_id=ctx.user_id, title="Whole",
                status=JobStatus.RUNNING, created_at=now, started_at=now)
    naive = Job(id=uuid.uuid4().hex, job_type="bench_progress_costs", user_id=ctx.user_id, title="Naive",
                status=JobStatus.RUNNING, created_at=now, started_at=now)

    def step(job: Job, index: int) -> Job:
        job.progress = index % 100
        job.message = f"Step {index}"
        job.seq = next_seq(job.seq)
        job.updated_at = iso(utcnow())
        return job

    for stage in EPM_STEPS[:AT_STEP + 1]:
        ctx.stage(0, stage, seconds=0)
    estimate = ctx._live.job.estimate
    if not estimate:
        raise RuntimeError("the probe's job has no estimate: its history was not seeded")
    for job in (shadow, whole):
        store.write(epm_shaped(job, estimate), Guard.RECORD)
    peers = Peers(current_app.config["REDIS_URL"], store.prefix)
    peer_designs = peers.designs()
    # Channels are followed as in production: a PUBLISH that reaches a subscriber costs Redis more than one
    # that reaches nobody. epm's event streams, of a user and of one job alike, follow the user's channel (a
    # process's hub); a job's own channel is there for an operator's ``redis-cli SUBSCRIBE``, followed by
    # nobody while nobody looks. The peers' channels have their waiters (Celery's result waiter).
    listener = Listener(current_app.config["REDIS_URL"], [store.user_channel(ctx.user_id), *peers.channels])
    live = ctx._live
    live.interval = 86_400.0  # the pulse leaves this job's progress writes to the turns below

    def report_and_write(index: int) -> None:
        ctx.progress(index % 100, f"Update {index}")
        live._write()

    designs: dict[str, Any] = {
        "ping": lambda index: client.ping(),
        # The floor of epm's own path: a PING on the store's lane (no redis-py command layers; epm/jobs/lane.py).
        **({"lane_ping": lambda index: store._call("PING")} if store._lane is not None else {}),
        "progress": report_and_write,
        "store_update": lambda index: store.save_progress(step(shadow, index)),
        "save": lambda index: store.write(step(whole, index), Guard.RECORD),
        **peer_designs,
    }
    unrelated = benchlib.unrelated_work
    clock, cpu = time.perf_counter, time.thread_time
    rounds = []
    statements = 0
    with db.engine.connect() as conn:
        conn.execute(insert(BackgroundJob).values(**_row(naive)))
        conn.commit()
        naive_update = update(BackgroundJob).where(BackgroundJob.id == naive.id)

        def naive_write(index: int) -> None:
            conn.execute(naive_update.values(progress=index % 100, message=f"Update {index}"))
            conn.commit()

        for _ in range(params["rounds"]):
            times: dict[str, list[float]] = {f"{name}{kind}": [] for name in [*designs, "naive"]
                                             for kind in ("", "_cpu")}
            for index in range(params["calls"]):
                turn = list(designs.items())
                if index % params["naive_every"] == 0:
                    turn.append(("naive", naive_write))
                for name, call in turn:
                    unrelated()
                    with statement_counter(db.engine) as seen:
                        start, start_cpu = clock(), cpu()
                        call(index)
                        end, end_cpu = clock(), cpu()
                    if name == "progress":
                        statements += len(seen)
                    times[name].append(end - start)
                    times[name + "_cpu"].append(end_cpu - start_cpu)
            rounds.append({name: median(values) * 1e6 for name, values in times.items() if values})
    peers.close()
    listener.close()
    return {"rounds": rounds, "progress_statements": statements, "peers": peers.versions,
            "listened": listener.channels}


class Listener:
    """``redis-cli SUBSCRIBE`` in a process of its own, following the channels the designs publish on."""

    def __init__(self, redis_url: str | None, channels: list[str]):
        import shutil
        import subprocess

        self.process = None
        self.channels = 0
        binary = shutil.which("redis-cli")
        if redis_url and binary:
            self.process = subprocess.Popen([binary, "-u", redis_url, "SUBSCRIBE", *channels],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.channels = len(channels)
            time.sleep(0.5)  # subscribed before the first write

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)


class Peers:
    """The progress writes of RQ (``Job.save_meta``) and Celery (``Task.update_state``, Redis result backend),
    on the run's Redis under the run's key prefix. Real Redis only: neither talks to fakeredis here."""

    def __init__(self, redis_url: str | None, prefix: str):
        self.versions = benchlib.versions("rq", "celery", "redis")
        self.url = redis_url
        self.prefix = prefix
        self._clients: list[Any] = []
        #: the channels the peers publish on (Celery's result of the task)
        self.channels: list[str] = []

    def designs(self) -> dict[str, Any]:
        if not self.url:
            return {}
        found = {}
        if self.versions["rq"] != "not installed":
            found["rq_save_meta"] = self._rq()
        if self.versions["celery"] != "not installed":
            found["celery_update_state"] = self._celery()
        return found

    def _rq(self):
        import redis
        from rq.job import Job as RqJob

        connection = redis.Redis.from_url(self.url)  # RQ wants bytes replies
        self._clients.append(connection)
        job = RqJob.create("builtins.print", connection=connection, id=f"bench-{uuid.uuid4().hex}")
        job.save()
        self._rq_job = job

        def save_meta(index: int) -> None:
            job.meta["progress"] = index % 100
            job.meta["message"] = f"Update {index}"
            job.save_meta()

        return save_meta

    def _celery(self):
        from celery import Celery

        app = Celery("bench_progress", broker="memory://", backend=self.url)
        app.conf.result_backend_transport_options = {"global_keyprefix": self.prefix}

        @app.task(bind=True)
        def work(self):  # never run: only its update_state is called
            return None

        task_id = uuid.uuid4().hex
        self.channels.append(f"{self.prefix}celery-task-meta-{task_id}")  # the backend publishes on the result's key
        self._clients.append(app)
        return lambda index: work.update_state(task_id=task_id, state="PROGRESS",
                                               meta={"progress": index % 100, "message": f"Update {index}"})

    def close(self) -> None:
        if getattr(self, "_rq_job", None) is not None:
            self._rq_job.delete()
        for client in self._clients:
            client.close()


@operation("bench_progress_loop", title="Progress loop", requires_session=False)
def tight_loop(ctx) -> dict[str, Any]:
    """Calls ctx.progress() as fast as it can, each call with a new message (``spin_us`` of work between)."""
    calls, spin = ctx.params["calls"], ctx.params.get("spin_us", 0) / 1e6
    start = time.perf_counter()
    for index in range(calls):
        ctx.progress(index * 100 / calls, f"Item {index + 1} of {calls}")
        if spin:
            until = time.perf_counter() + spin
            while time.perf_counter() < until:
                pass
    return {"loop_seconds": time.perf_counter() - start}


def _row(job: Job) -> dict[str, Any]:
    from epm.jobs.job import parse_iso

    return {"id": job.id, "job_type": job.job_type, "title": job.title, "status": job.status.value,
            "progress": 0, "message": "", "user_id": job.user_id, "created_at": parse_iso(job.created_at)}


# -- helpers -------------------------------------------------------------------------------------------
def run_job(app, job_type: str, user_id: str, params: dict[str, Any], timeout: float = 300) -> Job:
    """Start a job through JobService, wait until its runner is done, return its final state."""
    from epm.jobs import current_jobs

    with app.app_context():
        service = current_jobs()
        job = service.start(job_type, user_id=user_id, params=params)
        deadline = time.monotonic() + timeout
        while job.id in service.runner.running:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job.id} ({job_type}) did not finish in {timeout}s")
            time.sleep(0.005)
        final = service.store.load(job.id)
    if final is None or final.status is not JobStatus.COMPLETED:
        raise RuntimeError(f"job {job_type} ended {final.status if final else 'missing'}: {final and final.error}")
    return final


class CommandCounter:
    """Counts the Redis commands and round trips a client sends, pipelines included (client side), and those
    the job store sends on its lane (epm/jobs/lane.py), beside the client's pool."""

    def __init__(self, client, store=None):
        self.client = client
        self.store = store
        self._store_call = None
        self._store_send = None
        self.commands = 0
        self.round_trips = 0
        self._lock = threading.Lock()

    def _count(self, commands: int) -> None:
        with self._lock:
            self.commands += commands
            self.round_trips += 1

    def __enter__(self) -> CommandCounter:
        execute_command = self.client.execute_command
        make_pipeline = self.client.pipeline

        def counted_command(*args, **kwargs):
            self._count(1)
            return execute_command(*args, **kwargs)

        def counted_pipeline(*args, **kwargs):
            pipe = make_pipeline(*args, **kwargs)
            execute = pipe.execute

            def counted_execute(*a, **k):
                # MULTI and EXEC travel in the same round trip as the queued commands.
                self._count(len(pipe.command_stack) + (2 if pipe.transaction else 0))
                return execute(*a, **k)

            pipe.execute = counted_execute
            return pipe

        self.client.execute_command = counted_command
        self.client.pipeline = counted_pipeline
        if self.store is not None:
            store_call = self._store_call = self.store._call

            def counted_call(*args):
                self._count(1)
                return store_call(*args)

            self.store._call = counted_call
            store_send = self._store_send = getattr(self.store, "_send", None)
            if store_send is not None:
                def counted_send(packed):
                    self._count(1)
                    return store_send(packed)

                self.store._send = counted_send
        return self

    def __exit__(self, *exc: object) -> None:
        del self.client.execute_command
        del self.client.pipeline
        if self.store is not None:
            self.store._call = self._store_call
            if self._store_send is not None:
                self.store._send = self._store_send


class EventCounter:
    """Counts the events published on a channel until a terminal one arrives."""

    def __init__(self, client, channel: str):
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(channel)
        deadline = time.monotonic() + 10
        while (self.pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis did not confirm the subscription to {channel}")
        self.events = 0
        self.last: dict[str, Any] | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.done.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                self.events += 1
                self.last = json.loads(message["data"])
                if self.last.get("terminal"):
                    self.done.set()

    def wait(self, timeout: float = 30) -> int:
        self.done.wait(timeout)
        self.done.set()
        self.thread.join(2)
        self.pubsub.close()
        return self.events


def tight_loop_figures(app, user_id: str, calls: int, spin_us: int = 0) -> dict[str, Any]:
    client = app.extensions["redis"]
    with app.app_context():
        from epm.jobs import current_jobs

        store = current_jobs().store
        channel = store.user_channel(user_id)
    events = EventCounter(client, channel)
    started = time.perf_counter()
    with CommandCounter(client, store) as commands:
        final = run_job(app, "bench_progress_loop", user_id, {"calls": calls, "spin_us": spin_us})
    job_seconds = time.perf_counter() - started
    published = events.wait()
    return {"events": published, "commands": commands.commands, "round_trips": commands.round_trips,
            "loop_ms": final.result["loop_seconds"] * 1000, "job_ms": job_seconds * 1000,
            "call_us": final.result["loop_seconds"] / calls * 1e6, "last_progress": events.last}


class NaiveContext:
    """The first design's job context: every progress() is an UPDATE of the job's row and a COMMIT.

    Cancel checks cost nothing here (the naive design would read the row for them, too).
    """

    def __init__(self, conn, job_id: str, params: dict[str, Any]):
        from sqlalchemy import update

        from epm.jobs.models import BackgroundJob

        self.conn = conn
        self.job_id = job_id
        self.params = params
        self._update = update(BackgroundJob).where(BackgroundJob.id == job_id)

    def progress(self, percent: float, message: str | None = None) -> None:
        self.conn.execute(self._update.values(progress=int(percent), message=message))
        self.conn.commit()

    def stage(self, percent: float, message: str, seconds: float | None = None) -> None:
        self.progress(percent, message)

    def check_cancelled(self) -> None:
        return None

    def checkpoint(self, name: str, value: Any) -> None:
        return None  # the naive design keeps no checkpoints

    def checkpoint_value(self, name: str, default: Any = None) -> Any:
        return default

    def run_blocking(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def finish(self) -> None:
        self.conn.execute(self._update.values(status="completed", progress=100, completed_at=utcnow()))
        self.conn.commit()


def naive_job_writes(app, user_id: str, jobs: int, steps: int) -> list[str]:
    """Run the demo countdown the naive way ``jobs`` times; return the statements it sent."""
    from sqlalchemy import insert

    from epm.extensions import db
    from epm.jobs.models import BackgroundJob
    from epm.operations.demo import countdown

    with app.app_context(), db.engine.connect() as conn, statement_counter(db.engine) as seen:
        for _ in range(jobs):
            job = Job(id=uuid.uuid4().hex, job_type="demo_countdown", user_id=user_id, title="Demo countdown",
                      status=JobStatus.PENDING, created_at=iso(utcnow()))
            conn.execute(insert(BackgroundJob).values(**_row(job)))
            conn.commit()
            ctx = NaiveContext(conn, job.id, {"steps": steps})
            countdown(ctx)
            ctx.finish()
    return list(seen)


# -- the run ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument("--gevent", action="store_true",
                        help="run under gevent's monkey-patching, as a gunicorn gevent worker runs the jobs")
    parser.add_argument("--no-busy", dest="busy", action="store_false",
                        help="leave out the second measurement, beside a process spinning on one core")
    for name in SIZES["full"]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"override the size {name}")
    args = parser.parse_args()
    sizes = dict(SIZES["quick" if args.quick else "full"])
    for name in sizes:
        if getattr(args, name) is not None:
            sizes[name] = getattr(args, name)

    with Backends("bench_progress", own_redis=True) as backends:
        print(f"bench_progress on {backends.label}{' under gevent' if args.gevent else ''}; sizes {sizes}; "
              f"{benchlib.load_average()}", flush=True)
        app = backends.app()
        direct = backends.app(EPM_PROGRESS_INTERVAL=0)
        user_id = str(benchlib.create_users(app, 1, "progress")[0])
        seed_history(app, user_id, "bench_progress_costs")

        params = {"rounds": sizes["rounds"], "calls": sizes["calls"], "naive_every": sizes["naive_every"]}
        probe = run_job(direct, "bench_progress_costs", user_id, params, timeout=1800)
        rounds = probe.result["rounds"]
        busy_rounds = None
        if args.busy:
            # Again with the machine busy, as a production server is: a process spinning on one core keeps the
            # vCPUs awake, and a round trip no longer includes the wake-up of an idle one (60 µs against 6.5 µs
            # on the VMs measured in docs/performance.md), which flatters every ratio to PING.
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                busy_rounds = run_job(direct, "bench_progress_costs", user_id, params, timeout=1800).result["rounds"]
            finally:
                spinner.kill()
                spinner.wait()

        from epm.extensions import db

        with app.app_context(), statement_counter(db.engine) as ours:
            for _ in range(sizes["jobs"]):
                run_job(app, "demo_countdown", user_id, {"steps": sizes["steps"]})
        naive = naive_job_writes(app, user_id, sizes["jobs"], sizes["steps"])

        coalesced = tight_loop_figures(app, user_id, sizes["loop"])
        every = tight_loop_figures(direct, user_id, sizes["loop"])
        # The same calls spread over about two seconds of work: coalescing caps the writes at ~10 a second.
        spread = tight_loop_figures(app, user_id, sizes["loop"], spin_us=2_000_000 // sizes["loop"])
        for flask_app in (app, direct):
            flask_app.extensions["epm.jobs"].runner.shutdown(grace=5)
            with flask_app.app_context():
                db.session.remove()
                db.engine.dispose()
        report(backends, sizes, rounds, busy_rounds, probe.result["progress_statements"], ours, naive, coalesced,
               every, spread, probe.result["peers"], probe.result["listened"], args.gevent)


def _describe(state: dict[str, Any] | None) -> str:
    return f"{state['status']} {state['progress']}%" if state else "none"


def report(backends: Backends, sizes: dict[str, int], rounds: list[dict[str, float]],
           busy_rounds: list[dict[str, float]] | None, progress_statements: int, ours: list[str], naive: list[str],
           coalesced: dict[str, Any], every: dict[str, Any], spread: dict[str, Any], versions: dict[str, str],
           listened: int, under_gevent: bool) -> None:
    def med(name: str, of: list[dict[str, float]] = rounds) -> float:
        return median([r[name] for r in of])

    def ratio(name: str, of: list[dict[str, float]] = rounds) -> float:
        return median([r[name] / r["ping"] for r in of])

    def probe_table(title: str, of: list[dict[str, float]]) -> None:
        def row(label: str, name: str, statements: float | None) -> list:
            if not any(name in r for r in of):
                return [label + " (not measured: needs real Redis and the bench extra)", None, None, None, None]
            return [label, med(name, of), ratio(name, of), med(name + "_cpu", of), statements]

        print_table(f"{title} (µs per call: median of {sizes['rounds']} rounds' medians of {sizes['calls']} turns; "
                    f"in each turn every design is called once, in turn, with unrelated work before each call; "
                    f"x PING: median of the per-round ratios)",
                    ["design", "µs per call", "x PING", "client CPU µs", "DB statements per update"],
                    [row("PING on the same Redis client (floor: one round trip)", "ping", 0),
                     row("PING on the store's lane (the floor of epm's writes: no redis-py command layers)",
                         "lane_ping", 0),
                     row("epm: a progress update (ctx.progress() + the pulse's write: one EVALSHA)", "progress",
                         progress_statements / (sizes["rounds"] * sizes["calls"]) if of is rounds else None),
                     row("epm: JobStore.save_progress alone (one EVALSHA)", "store_update", 0),
                     row("epm: a status change (JobStore.write: the whole state, one EVALSHA)", "save", 0),
                     row(f"RQ {versions.get('rq')}: Job.save_meta (one HSET, no publish)", "rq_save_meta", 0),
                     row(f"Celery {versions.get('celery')}: Task.update_state (Redis backend)",
                         "celery_update_state", 0),
                     row("naive: UPDATE background_jobs ...; COMMIT", "naive", 1)])

    probe_table(f"One progress update on {backends.label}, the machine otherwise idle", rounds)
    if busy_rounds:
        probe_table("The same beside a process spinning on one core (the vCPUs awake, as on a busy server)",
                    busy_rounds)
    print(f"A subscriber ({'redis-cli SUBSCRIBE' if listened else 'none: redis-cli missing'}) followed "
          f"{listened} channel(s), as in production: epm's user channel and the peers' (a job's own channel, "
          f"which nobody follows unless an operator looks, is published to unheard); "
          f"{'under gevent' if under_gevent else 'plain threads'}")

    jobs, steps = sizes["jobs"], sizes["steps"]
    writes = sum(map(benchlib.is_write, ours)) / jobs
    naive_writes = sum(map(benchlib.is_write, naive)) / jobs
    print_table(f"Database statements per job (demo countdown of {steps} progress calls, {jobs} jobs)",
                ["design", "writes per job", "all statements per job"],
                [["ours (JobService: insert + terminal state)", writes, len(ours) / jobs],
                 ["naive (a write per progress update)", naive_writes, len(naive) / jobs]])

    loop = sizes["loop"]
    columns = (coalesced, every, spread)
    print_table(f"A job calling progress() {loop:,} times in a loop (whole job, from start to terminal state)",
                ["figure", "tight loop, coalesced (0.1 s)", "tight loop, interval 0 (writes back to back)",
                 "loop of ~2 s, coalesced"],
                [["events published", *(c["events"] for c in columns)],
                 ["Redis commands sent", *(c["commands"] for c in columns)],
                 ["Redis round trips", *(c["round_trips"] for c in columns)],
                 ["wall time of the loop (ms)", *(c["loop_ms"] for c in columns)],
                 ["µs per progress() call (incl. work)", *(c["call_us"] for c in columns)],
                 ["wall time of the whole job (ms)", *(c["job_ms"] for c in columns)],
                 ["last event published (the final state always arrives)",
                  *(_describe(c["last_progress"]) for c in columns)]])

    update_vs_ping = ratio("progress")

    def optional(name: str, how) -> float | None:
        return how(name) if any(name in r for r in rounds) else None

    figures = {
        "backend": "real" if backends.real else "embedded", "gevent": under_gevent, "load": benchlib.load_average(), **{
            # "redis" is the client's distribution (redis-py), not the server's version
            f"{'redis_py' if name == 'redis' else name}_version": version for name, version in versions.items()},
        "lane_ping_us": optional("lane_ping", med),
        "update_vs_lane_ping": (median([r["progress"] / r["lane_ping"] for r in rounds])
                                if any("lane_ping" in r for r in rounds) else None),
        "ping_us": med("ping"), "save_us": med("save"), "update_us": med("progress"),
        "store_update_us": med("store_update"), "save_vs_ping": ratio("save"), "update_vs_ping": update_vs_ping,
        "store_update_vs_ping": ratio("store_update"), "ping_cpu_us": med("ping_cpu"),
        "update_cpu_us": med("progress_cpu"), "save_cpu_us": med("save_cpu"),
        "rq_save_meta_us": optional("rq_save_meta", med), "rq_vs_ping": optional("rq_save_meta", ratio),
        "rq_cpu_us": optional("rq_save_meta_cpu", med),
        "celery_update_state_us": optional("celery_update_state", med),
        "celery_vs_ping": optional("celery_update_state", ratio),
        "celery_cpu_us": optional("celery_update_state_cpu", med),
        "naive_update_us": med("naive"), "naive_vs_update": median([r["naive"] / r["progress"] for r in rounds]),
        "update_db_statements": progress_statements,
        "db_writes_per_job": writes, "db_statements_per_job": len(ours) / jobs,
        "naive_db_writes_per_job": naive_writes, "progress_calls_per_job": steps,
        "coalesced_calls": loop, "coalesced_events": coalesced["events"],
        "coalesced_redis_commands": coalesced["commands"], "coalesced_round_trips": coalesced["round_trips"],
        "coalesced_wall_ms": coalesced["loop_ms"], "coalesced_call_us": coalesced["call_us"],
        "uncoalesced_events": every["events"], "uncoalesced_redis_commands": every["commands"],
        "uncoalesced_wall_ms": every["loop_ms"],
        "spread_wall_ms": spread["loop_ms"], "spread_events": spread["events"],
    }
    busy_update_vs_ping = None
    if busy_rounds:
        busy_update_vs_ping = ratio("progress", busy_rounds)
        figures.update({
            "busy_ping_us": med("ping", busy_rounds), "busy_update_us": med("progress", busy_rounds),
            "busy_update_vs_ping": busy_update_vs_ping,
            "busy_store_update_vs_ping": ratio("store_update", busy_rounds),
            "busy_ping_cpu_us": med("ping_cpu", busy_rounds), "busy_update_cpu_us": med("progress_cpu", busy_rounds),
            "busy_rq_vs_ping": optional("rq_save_meta", lambda name: ratio(name, busy_rounds)),
            "busy_celery_vs_ping": optional("celery_update_state", lambda name: ratio(name, busy_rounds)),
        })
    verdicts = [
        ("update <= 1.3x PING, machine idle", update_vs_ping <= 1.3),
        *([("update <= 1.3x PING, one core busy", busy_update_vs_ping <= 1.3)] if busy_update_vs_ping is not None
          else []),
        ("zero DB statements per update", progress_statements == 0),
        ("2 DB writes per job", writes == 2),
    ]
    print("\nTargets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in verdicts))
    benchlib.emit(benchlib.rounded(figures))


if __name__ == "__main__":
    main()
