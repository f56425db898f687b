"""Prometheus metrics: the job system's signals counted, exposed at ``/metrics``.

Under gunicorn every worker is a process of its own, so counters live in prometheus_client's
multiprocess mode: each process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (which
gunicorn.conf.py prepares before the workers start and sets for them) and a scrape, answered by
any worker, adds up the files of all of them. A process without that variable (``flask run``, the
tests, the CLI) keeps its metrics in memory and reports its own.

The jobs do not know the metrics: they send blinker signals (epm/jobs/signals.py) and this module
listens. Each receiver costs about a microsecond; the event hub sends one signal per event and process
(not per stream), and the two per-event metrics (events published, delivery latency) are added up in
plain numbers and written to the metric files every 50 ms in a worker (``_Pending``).
"""

from __future__ import annotations

import gc
import logging
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from . import signals
from .jobs.sse import LatestSeqs

if TYPE_CHECKING:
    from flask import Flask

    from .jobs.job import Job
    from .jobs.service import JobService

log = logging.getLogger("epm.metrics")

# The ``*_created`` series say when a process first counted; multiprocess mode has none, so neither has this.
disable_created_metrics()

JOBS_STARTED = Counter("epm_jobs_started_total", "Jobs whose runner started them, by operation.", ["job_type"])
JOBS_FINISHED = Counter("epm_jobs_finished_total",
                        "Jobs that reached a terminal state, by operation and final status (reaped ones included).",
                        ["job_type", "status"])
JOBS_RUNNING = Gauge("epm_jobs_running", "Jobs running now in the server's processes.",
                     multiprocess_mode="livesum")
JOB_DURATION = Histogram("epm_job_duration_seconds", "From running to the terminal state, by operation.",
                         ["job_type"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
EVENTS_PUBLISHED = Counter("epm_job_events_published_total",
                           "Job states written and published by runners (one PUBLISH per channel), by operation.",
                           ["job_type"])
SSE_STREAMS = Gauge("epm_sse_streams", "Event streams (SSE clients) connected now.", multiprocess_mode="livesum")
DELIVERY_LATENCY = Histogram("epm_event_delivery_seconds",
                             "From a job state's write (its seq clock) to the first event stream that sends it.",
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOBS_REAPED = Counter("epm_jobs_reaped_total", "Jobs the reaper ended as interrupted (no heartbeat), by operation.",
                      ["job_type"])
LOOP_LAG = Histogram("epm_event_loop_lag_seconds",
                     "How late the gevent loop woke a 50 ms timer: the longest time it was blocked (by CPU work "
                     "on the loop, e.g. a password hash not sent to the threadpool) or behind other ready greenlets.",
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
LOOP_BLOCK = Histogram("epm_event_loop_block_seconds",
                       "CPU time one greenlet used without yielding to the gevent loop (runs of 1 ms or more): "
                       "while it runs, no other request, stream or job of the worker moves.",
                       buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
LOOP_BLOCK_MAX = Gauge("epm_event_loop_block_max_seconds",
                       "The most CPU time a greenlet has used without yielding, since the worker started.",
                       multiprocess_mode="max")
LOOP_LAG_MAX = Gauge("epm_event_loop_lag_max_seconds", "The longest event loop lag a worker has seen since it started.",
                     multiprocess_mode="max")
BACKEND_ERRORS = Counter("epm_backend_errors_total", "Failed calls to Redis or the database.", ["backend"])

# Jobs this process started and has not let go of: id -> monotonic start, for the gauge and durations.
_running: dict[str, float] = {}
# job id -> the newest seq whose delivery was measured; the first stream to send an event measures it.
# An ended job's entry stays while the other streams send its last event, then goes (a bounded memory).
_delivered = LatestSeqs(keep_ended=1_000, limit=10_000)
# Counter children by label, so the per-event path skips prometheus_client's label lookup.
_published: dict[str, Any] = {}
_connected = False


class _Pending:
    """The per-event metrics' increments, held in plain numbers until ``flush_pending`` adds them in one go.

    In multiprocess mode an increment writes a memory-mapped file under a lock (1.4 µs for a counter, 3.2 µs
    for a histogram's observation, measured here), and a worker delivering 10,000 events a second makes a
    thousand of them: each progress write counts one published event and each event fanned out observes
    its delivery latency. Held here, they cost an addition each and reach the files at the next flush: the
    loop monitor's tick (every ``LOOP_TICK`` in a gunicorn worker) and before this process renders a scrape.
    A process without the loop monitor (the CLI, ``flask run``, the tests' apps) never holds any: ``batching``
    is off there and every increment goes straight to its metric.
    """

    def __init__(self, histogram: Histogram):
        self.batching = False
        self.histogram = histogram
        # Histogram's own buckets (prometheus_client keeps them per bucket, not cumulative): the one an
        # observation goes to is the first whose upper bound is >= it, as ``Histogram.observe`` finds it.
        self.bounds = list(histogram._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.published: dict[Any, int] = {}

    def observe(self, amount: float) -> None:
        if not self.batching:
            self.histogram.observe(amount)
            return
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def count_published(self, child: Any) -> None:
        if not self.batching:
            child.inc()
            return
        self.published[child] = self.published.get(child, 0) + 1

    def flush(self) -> None:
        """Add what is held to the metrics (no switch to another greenlet between reading and clearing)."""
        if any(self.counts):
            counts, total = self.counts, self.total
            self.counts, self.total = [0] * len(self.bounds), 0.0
            buckets = self.histogram._buckets
            for index, count in enumerate(counts):
                if count:
                    buckets[index].inc(count)
            self.histogram._sum.inc(total)
        if self.published:
            published, self.published = self.published, {}
            for child, count in published.items():
                child.inc(count)


_pending = _Pending(DELIVERY_LATENCY)


def flush_pending() -> None:
    """Write the per-event increments this process holds to its metrics (see ``_Pending``)."""
    _pending.flush()


def multiprocess() -> bool:
    """True when this process shares its metrics with the server's other processes through files.

    prometheus_client chose when it was first imported, from ``PROMETHEUS_MULTIPROC_DIR``.
    """
    return values.ValueClass is not values.MutexValue


def init_app(app: Flask) -> None:
    """Listen to the job system's signals (once per process, whatever the number of apps)."""
    global _connected
    app.extensions["epm.metrics"] = True
    if _connected:
        return
    signals.job_started.connect(_on_started)
    signals.job_saved.connect(_on_saved)
    signals.job_finished.connect(_on_finished)
    signals.job_stopped.connect(_on_stopped)
    signals.job_reaped.connect(_on_reaped)
    signals.stream_changed.connect(_on_stream_changed)
    signals.event_delivered.connect(_on_delivered)
    signals.backend_error.connect(_on_backend_error)
    _connected = True


LOOP_TICK = 0.05


def start_loop_monitor(tick: float = LOOP_TICK, debug: bool = False) -> None:
    """Measure the gevent loop's blocks in this worker: a greenlet asks to wake every ``tick`` seconds and
    records how late it woke. gunicorn.conf.py starts it in each worker; it costs one wake-up per tick.

    With ``debug`` (``EPM_LOOP_BLOCK_DEBUG=1``) every greenlet run over ``BLOCK_DEBUG_LIMIT`` of CPU is also
    logged with what ran: the greenlet, the request it served and stack samples taken during the run."""
    import gevent

    def watch() -> None:
        worst = 0.0
        failing = False
        while True:
            asked = time.perf_counter()
            gevent.sleep(tick)
            try:
                _pending.flush()
            except Exception:  # the metric files (a full disk): the loop's own measures go on regardless
                if not failing:
                    log.exception("could not write the per-event metrics; trying again every tick")
                failing = True
            else:
                failing = False
            lag = max(0.0, time.perf_counter() - asked - tick)
            LOOP_LAG.observe(lag)
            if lag > worst:
                worst = lag
                LOOP_LAG_MAX.set(worst)

    # This greenlet flushes the per-event increments every tick: from now on they are held between ticks.
    _pending.batching = hasattr(DELIVERY_LATENCY, "_buckets") and hasattr(DELIVERY_LATENCY, "_sum")
    gevent.spawn(watch)
    _trace_blocks(gevent.get_hub(), _BlockSampler() if debug else None)


#: with EPM_LOOP_BLOCK_DEBUG, runs of a greenlet longer than this (CPU seconds) are logged with their stacks
BLOCK_DEBUG_LIMIT = 0.02
#: how stale the CPU reading a block is measured from may be, in seconds of wall time (its error bound)
BLOCK_MARK = 0.0002


def _trace_blocks(hub: Any, sampler: _BlockSampler | None = None) -> None:
    """Time each greenlet's run between two switches (greenlet's switch tracer, well under a microsecond a
    switch).

    In CPU time of the loop's thread: what a greenlet computed before it yielded, not the moments the
    machine gave the process to others (a busy 2-core host would count those against every greenlet).
    The hub's own turns are left out. Runs under 1 ms are not recorded.

    Reading the thread's CPU clock is a system call (a microsecond or more on a VM), too dear for every
    switch (tens of thousands a second in a busy worker). A run's CPU time is at most its wall time, so
    each switch reads only the wall clock (``perf_counter``, no system call); the CPU clock is read when a
    run took 1 ms of wall time or more, and otherwise only to keep a reading no older than ``BLOCK_MARK``
    of wall time. A long run's CPU time is then measured from that reading: exact to within ``BLOCK_MARK``
    (0.2 ms), never less than the run's own.
    """
    import greenlet

    wall, cpu = time.perf_counter, time.thread_time
    state = {"since": wall(), "mark": wall(), "mark_cpu": cpu(), "worst": 0.0}
    if sampler is not None:
        sampler.start(state)

    def trace(event: str, args: tuple) -> None:
        if event not in ("switch", "throw"):
            return
        now = wall()
        ran_wall, state["since"] = now - state["since"], now
        if ran_wall >= 0.001:
            used = cpu()
            ran = used - state["mark_cpu"]
            state["mark"], state["mark_cpu"] = now, used
            if sampler is not None:
                sampler.run_ended(args[0], args[1], ran, hub)
            if args[0] is hub or ran < 0.001:
                return
            LOOP_BLOCK.observe(ran)
            if ran > state["worst"]:
                state["worst"] = ran
                LOOP_BLOCK_MAX.set(ran)
            return
        if sampler is not None:
            sampler.run_ended(args[0], args[1], 0.0, hub)
        if now - state["mark"] > BLOCK_MARK:
            state["mark"], state["mark_cpu"] = now, cpu()

    greenlet.settrace(trace)


class _BlockSampler:
    """Says what blocked the loop (``EPM_LOOP_BLOCK_DEBUG=1`` only; never in production).

    A native thread looks at the loop thread's CPU clock every millisecond; while the current greenlet run
    has used more than half of ``BLOCK_DEBUG_LIMIT`` it samples the loop thread's stack. When that run
    ends over the limit, one WARNING line names the greenlet, the request it was serving and the stacks.
    """

    def __init__(self, limit: float = BLOCK_DEBUG_LIMIT, every: float = 0.001, keep: int = 6):
        self.limit, self.every, self.keep = limit, every, keep
        self.run = 0  # which run the samples belong to
        self.samples: list[tuple[float, list[str]]] = []
        self.collections: list[tuple[int, float, int]] = []  # the run's garbage collections: generation, CPU s, freed
        self.running: Any = None  # the current run's greenlet function
        self._gc_started = 0.0

    def start(self, state: dict[str, float]) -> None:
        from gevent import monkey

        self.state = state
        self._get_ident = monkey.get_original("_thread", "get_ident")  # the OS thread's, not the greenlet's
        self.ident = self._get_ident()
        gc.callbacks.append(self._collected)
        start_new_thread = monkey.get_original("_thread", "start_new_thread")
        start_new_thread(self._sample, (monkey.get_original("time", "sleep"),))
        log.warning("loop block debug on: runs over %.0f ms are logged with stack samples", 1000 * self.limit)

    def _sample(self, sleep: Any) -> None:
        import sys
        import traceback

        clock = time.pthread_getcpuclockid(self.ident)
        while True:
            sleep(self.every)
            run, since = self.run, self.state["mark_cpu"]
            used = time.clock_gettime(clock) - since
            if used < self.limit / 2:
                continue
            frame = sys._current_frames().get(self.ident)
            if frame is None or run != self.run:
                continue
            stack = [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno} {f.name}"
                     for f in traceback.extract_stack(frame)[-14:]]
            samples = self.samples
            if len(samples) < self.keep and run == self.run:
                samples.append((used, stack))

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        """gc's callback: the garbage collections of the loop's thread, timed (they hold the GIL)."""
        if self._get_ident() != self.ident:
            return
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            self.collections.append((info["generation"], time.thread_time() - self._gc_started, info["collected"]))

    def run_ended(self, greenlet: Any, target: Any, ran: float, hub: Any) -> None:
        """``greenlet`` ran for ``ran`` CPU seconds and now switches to ``target``."""
        self.run += 1
        samples, self.samples = self.samples, []
        collections, self.collections = self.collections, []
        # What the next run runs, noted now: a gevent greenlet that ends drops its function.
        started, self.running = self.running, _run_function(target)
        if ran < self.limit:
            return
        who = "the hub" if greenlet is hub else _describe(greenlet, started)
        lines = [f"  sample at {1000 * used:.0f} ms:\n" + "\n".join(f"    {frame}" for frame in stack)
                 for used, stack in samples]
        if collections:
            lines.insert(0, "  garbage collections in the run: " + ", ".join(
                f"gen {generation} {1000 * took:.1f} ms ({freed} freed)" for generation, took, freed in collections))
        log.warning("loop block %.1f ms (CPU) in %s\n%s", 1000 * ran, who,
                    "\n".join(lines) or "  (no stack sample taken: the run held the GIL)")


def _run_function(greenlet: Any) -> Any:
    return getattr(greenlet, "_run", None) or getattr(greenlet, "run", None)  # a gevent Greenlet's, or greenlet's


def _describe(greenlet: Any, run: Any) -> str:
    """A greenlet's run function and, for one serving a request, the request's method and path."""
    name = getattr(run, "__qualname__", None) or repr(run)
    try:
        from flask.globals import _cv_request

        context = greenlet.gr_context
        request = context.get(_cv_request) if context is not None else None
        if request is not None:
            name += f" serving {request.request.method} {request.request.full_path}"
    except Exception:  # noqa: BLE001 - a description only
        pass
    return name


def render(jobs: JobService, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition and its content type (OpenMetrics when ``accept`` asks for it, else Prometheus text).

    Every process's metrics (or this one's), and the cluster's queues read from Redis now.
    """
    _pending.flush()
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(_LiveState(jobs))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _LiveState:
    """Gauges read from Redis at each scrape: the same for every instance, so aggregate them with max()."""

    def __init__(self, jobs: JobService):
        self.jobs = jobs

    def collect(self):
        import redis

        try:
            queues = self.jobs.queue_stats()
        except redis.RedisError as exc:
            # The scrape still answers with the process metrics; the error is counted and readyz says why.
            _on_backend_error(exc, backend="redis")
            log.warning("metrics: Redis gauges left out of this scrape: %s", exc)
            return
        yield GaugeMetricFamily("epm_outbox_depth", "Finished jobs waiting in the outbox for the database.",
                                value=queues["outbox"])
        yield GaugeMetricFamily("epm_outbox_dead_letters",
                                "Finished jobs the database refused for their data (see `flask jobs dead-letters`).",
                                value=queues["dead_letters"])
        yield GaugeMetricFamily("epm_jobs_active", "Jobs in the active set (running or pending, any instance).",
                                value=queues["active"])
        yield GaugeMetricFamily("epm_jobs_overdue", "Active jobs whose heartbeat deadline passed (the reaper's next).",
                                value=queues["overdue"])


# -- receivers: each does a few dictionary operations and an increment ---------------------------------
def _on_started(job: Job, **_: Any) -> None:
    _running[job.id] = time.monotonic()
    JOBS_STARTED.labels(job.job_type).inc()
    JOBS_RUNNING.inc()


def _on_saved(job: Job, **_: Any) -> None:
    child = _published.get(job.job_type)
    if child is None:
        child = _published[job.job_type] = EVENTS_PUBLISHED.labels(job.job_type)
    _pending.count_published(child)


def _on_finished(job: Job, **_: Any) -> None:
    JOBS_FINISHED.labels(job.job_type, job.status.value).inc()
    started = _running.get(job.id)
    if started is not None:
        JOB_DURATION.labels(job.job_type).observe(time.monotonic() - started)


def _on_stopped(job: Job, **_: Any) -> None:
    if _running.pop(job.id, None) is not None:
        JOBS_RUNNING.dec()


def _on_reaped(job: Job, **_: Any) -> None:
    JOBS_REAPED.labels(job.job_type).inc()
    JOBS_FINISHED.labels(job.job_type, job.status.value).inc()


def _on_stream_changed(_hub: Any, delta: int = 0, **__: Any) -> None:
    SSE_STREAMS.inc(delta)


def _on_delivered(message: Any, **_: Any) -> None:
    # The hub signals once per event and process; a state published again with the same seq (a batch the job
    # store's lane sent once more after a connection error) is measured once.
    if _delivered.get(message.job_id, 0) >= message.seq:
        return
    _delivered.record(message)
    # seq is the millisecond clock of the state's write (see epm.jobs.job.next_seq).
    _pending.observe(max(0.0, time.time() - message.seq / 1000))


def _on_backend_error(_error: Any, backend: str = "unknown", **_: Any) -> None:
    BACKEND_ERRORS.labels(backend if backend in ("redis", "database") else "unknown").inc()
