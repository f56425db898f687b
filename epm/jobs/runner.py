"""Runner: executes an operation as a job, from ``running`` to exactly one terminal state.

A job runs in the web process itself: a greenlet under gunicorn's gevent worker, a thread elsewhere
(``threading`` is monkey-patched under gevent, so the same code gives either). Beside the operation a
small pulse loop refreshes the heartbeat on its own timer, delivers coalesced progress and notices
cancel requests, so a job that computes for a while is not taken for dead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from .. import logs
from ..extensions import db as _db  # at import: an import statement in release_database costs every report
from . import signals
from .job import RESUMED_MESSAGE, Job, JobStatus, iso, next_seq, utcnow
from .registry import Operation

if TYPE_CHECKING:
    from flask import Flask

    from .store import JobStore

log = logging.getLogger("epm.jobs")


class JobCancelled(Exception):
    """Raised inside an operation when the user asked to cancel it."""


class OperationError(Exception):
    """A failure whose message is fit to show the user (no traceback, no internals)."""

    def __init__(self, message: str, code: str = "operation_failed"):
        super().__init__(message)
        self.message = message
        self.code = code


class ShuttingDown(Exception):
    """Raised inside an operation when the process stops before the job could finish."""


# Seconds between two writes of a job's checkpoints to Redis.
CHECKPOINT_EVERY = 1.0

INTERRUPTED_BY_SHUTDOWN = "The server restarted before this job finished. Retry it to run it again."


def under_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run pure computation without blocking the event loop (gevent's threadpool under gevent)."""
    if under_gevent():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args, kwargs)
    return fn(*args, **kwargs)


class JobContext:
    """What an operation sees of its job: its parameters, progress reporting, cancellation.

    Database connections: an operation loads its inputs first (plain data, not ORM objects it will
    use later) and writes its result in one short transaction at the end. Every report (``progress``,
    ``stage``) and every ``run_blocking`` ends the database session the operation had open, returning
    its connection to the pool, so a job that runs for minutes holds no connection while it computes
    or waits: connections follow database work, not running jobs. Anything added and not committed
    before a report is discarded.
    """

    def __init__(self, live: _LiveJob, params: dict[str, Any], config: dict[str, Any],
                 checkpoints: dict[str, Any] | None = None):
        self._live = live
        self.job_id = live.job.id
        self.user_id = live.job.user_id
        self.session_id = live.job.session_id
        self.attempt = live.job.attempt
        self.params = params
        self.config = config
        self._checkpoints = dict(checkpoints or {})
        self._unsaved: dict[str, Any] = {}
        self._saved_at = 0.0

    def checkpoint(self, name: str, value: Any) -> None:
        """Keep what a stage computed (JSON-able), so that an attempt resuming the job can skip it.

        Best effort and cheap: written to Redis at most once a second (a checkpoint made sooner waits
        for the next call); when Redis cannot take it, a resumed attempt simply computes it again.
        """
        self._checkpoints[name] = value
        self._unsaved[name] = value
        now = time.monotonic()
        if now - self._saved_at < CHECKPOINT_EVERY or self._live.reaped:  # reaped: no longer this run's job
            return
        self._saved_at = now
        try:
            for key, kept in self._unsaved.items():
                self._live.store.checkpoint(self.job_id, key, kept)
            self._unsaved.clear()
        except redis.RedisError as exc:
            log.info("job %s: checkpoint %r not kept (%s)", self.job_id, name, exc, extra=_log_extra(self._live.job))

    def checkpoint_value(self, name: str, default: Any = None) -> Any:
        """What an earlier attempt (or this one) kept under ``name``; ``default`` if nothing."""
        return self._checkpoints.get(name, default)

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0-100) and what is happening; cheap, coalesced to ~10 writes a second."""
        release_database()
        self._live.report(percent, message)

    def check_cancelled(self) -> None:
        """Raise ``JobCancelled`` if the user asked to cancel (``ShuttingDown`` if the process stops)."""
        self._live.raise_if_stopped()

    def stage(self, percent: float, message: str, seconds: float | None = None) -> None:
        """Start a stage: report it, stop here if cancelled, then pace it by ``EPM_STAGE_SECONDS``.

        The pacing stands in for the model calls a production generator makes at each stage, so
        the long-operation experience is real in the demo; it is 0 in tests. The wait ends early
        when the job is cancelled.
        """
        self.progress(percent, message)
        self.check_cancelled()
        pause = float(self.config.get("EPM_STAGE_SECONDS") or 0) if seconds is None else seconds
        if pause > 0:
            self._live.wait_stopped(pause)
            self.check_cancelled()

    def run_blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run CPU-heavy pure computation off the event loop; it must not touch the db, Redis or sockets."""
        release_database()
        return run_blocking(fn, *args, **kwargs)


def release_database() -> None:
    """End this greenlet's database session, if it has one, so its pooled connection goes back at once."""
    session = _db.session
    if session.registry.has():  # most reports find none: skip remove()'s second scope lookup and its KeyError
        session.remove()


class _LiveJob:
    """The runner's copy of a running job: the authoritative state, written to Redis by ``flush``."""

    def __init__(self, job: Job, store: JobStore, interval: float, heartbeat_every: float):
        self.job = job
        self.store = store
        self.interval = interval
        self.heartbeat_every = heartbeat_every
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.cancelled = False
        self.shutting_down = False
        self.finished = False
        self.finalized = False
        self.dirty = False
        self.last_write = 0.0
        self.redis_failing = False
        # A reaper ended the job while this runner still ran it (its heartbeat had lapsed).
        self.reaped = False
        # When the heartbeat deadline was last pushed forward (taken before the write, so never late).
        self.refreshed = time.monotonic()
        # Past this since the last refresh a reaper may have ended the job: writes check first.
        self.late_after = store.heartbeat_timeout / 2

    # -- called from the operation ---------------------------------------------------------------
    def report(self, percent: float, message: str | None) -> None:
        with self.lock:
            if self.finalized or self.reaped:
                return  # terminal states are final: a late report from the operation changes nothing
            pct = max(0, min(100, int(percent)))
            if message is not None and self.job.attempt > 1:
                message = f"{message} ({RESUMED_MESSAGE.lower()})"  # the user sees why it starts over
            changed = pct != self.job.progress or (message is not None and message != self.job.message)
            if not changed:
                return
            self.job.progress = pct
            if message is not None:
                self.job.message = message
            if time.monotonic() - self.last_write >= self.interval:
                self.flush()
            else:
                self.dirty = True
                self.wake.set()

    def raise_if_stopped(self) -> None:
        if self.cancelled:
            raise JobCancelled()
        if self.shutting_down or self.reaped:
            raise ShuttingDown()

    def wait_stopped(self, seconds: float) -> None:
        self.stopped.wait(seconds)

    # -- writing -----------------------------------------------------------------------------------
    def flush(self, *, status_change: bool = False, full: bool = False) -> bool:
        """Write the state to Redis now; False when Redis is unreachable (logged) or a reaper ended the job.

        A progress report writes only the fields it changes; a status change, a write after Redis was
        away and a write-back after Redis lost the job (``full``) write the whole state.

        A write that comes late (the heartbeat may have lapsed meanwhile) first checks that no reaper
        ended the job, so a terminal state is never overwritten by a runner that was presumed dead.
        """
        with self.lock:
            if self.reaped:
                return False
            self.job.seq = next_seq(self.job.seq)
            self.job.updated_at = iso(utcnow())
            self.dirty = False
            started = self.last_write = time.monotonic()
            # Whole-state writes push the heartbeat deadline; a progress report leaves it to the pulse.
            whole = status_change or full or started - self.refreshed > self.late_after or self.redis_failing
            try:
                if started - self.refreshed > self.late_after or self.redis_failing:
                    if not self.store.save_unless_finished(self.job):
                        self.mark_reaped()
                        return False
                elif not self.store.save(self.job, progress_only=not (status_change or full)):
                    self.mark_reaped()  # Redis holds a terminal state: a reaper ended the job
                    return False
            except redis.RedisError as exc:
                # Keep working: the next save writes the whole state again, so nothing is lost.
                if not self.redis_failing:
                    signals.backend_error.send(exc, backend="redis")
                    log.warning("job %s: Redis write failed (%s); the job goes on and re-writes its state "
                                "when Redis is back", self.job.id, exc, extra=_log_extra(self.job))
                self.redis_failing = True
                self.dirty = True
                return False
            if whole:
                self.refreshed = started
            if self.redis_failing:
                log.info("job %s: Redis is back; full state re-written", self.job.id, extra=_log_extra(self.job))
                self.redis_failing = False
            signals.job_saved.send(self.job, status_change=status_change)
            return True

    def mark_reaped(self) -> None:
        """A reaper ended the job or another process resumed it (its heartbeat lapsed): stop the
        operation, write nothing more."""
        if not self.reaped:
            self.reaped = True
            log.warning("job %s: ended or resumed elsewhere by the reaper while still running here (its "
                        "heartbeat lapsed for %.1fs); stopping it", self.job.id, time.monotonic() - self.refreshed,
                        extra=_log_extra(self.job))
        self.stopped.set()

    def release(self) -> bool:
        """Give the job up for another process to resume: write nothing more; False if it already ended."""
        with self.lock:
            if self.finalized:
                return False
            self.finalized = self.finished = self.reaped = True
        self.stopped.set()
        self.wake.set()
        return True

    def pulse(self) -> None:
        """Until the job finishes: heartbeat, deliver coalesced progress, notice cancel requests."""
        next_beat = 0.0
        while not self.finished and not self.reaped:
            now = time.monotonic()
            due = self.last_write + self.interval if self.dirty else next_beat
            timeout = max(0.0, due - now)
            self.wake.wait(min(timeout, self.heartbeat_every))
            self.wake.clear()
            if self.finished:
                return
            now = time.monotonic()
            if self.dirty and now - self.last_write >= self.interval:
                self.flush()
            if now >= next_beat:
                next_beat = now + self.heartbeat_every
                self._beat()

    def _beat(self) -> None:
        started = time.monotonic()
        try:
            beat = self.store.heartbeat(self.job)
        except redis.RedisError as exc:
            if not self.redis_failing:
                log.warning("job %s: heartbeat failed (%s); the job goes on", self.job.id, exc,
                            extra=_log_extra(self.job))
            self.redis_failing = True
            self.dirty = True
            return
        if (beat.status is not None and beat.status.is_terminal) or (beat.attempt or 0) > self.job.attempt:
            with self.lock:
                if not self.finalized:
                    self.mark_reaped()
                    return
        if not beat.whole or self.redis_failing:
            # Redis lost the job or part of it (restart without persistence, FLUSHALL, a failover to a
            # lagging replica) or was away: write it all back, its duplicate-start lock included.
            self.flush(full=True)
        else:
            # The deadline moved before the status was read: had a reaper ended the job, we would know.
            self.refreshed = started
        if beat.cancel and not self.cancelled:
            self.cancelled = True
            self.stopped.set()


class Runner:
    """Starts jobs in the background of this process and carries each to a terminal state."""

    def __init__(self, app: Flask, store: JobStore, on_terminal: Callable[[Job], bool]):
        self.app = app
        self.store = store
        self.on_terminal = on_terminal
        self.interval = float(app.config["EPM_PROGRESS_INTERVAL"])
        self.heartbeat_every = min(1.0, float(app.config["EPM_HEARTBEAT_TIMEOUT"]) / 3)
        self.max_attempts = int(app.config["EPM_MAX_ATTEMPTS"])
        self._live: dict[str, _LiveJob] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._operations: dict[str, Operation] = {}
        self._accepting = True

    @property
    def running(self) -> list[str]:
        return list(self._live)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def submit(self, job: Job, operation: Operation, params: dict[str, Any],
               checkpoints: dict[str, Any] | None = None) -> None:
        """Run ``operation`` for ``job`` (saved as pending, or claimed for resuming) in the background.

        Once shutdown began the job is not run: it is left for another process to resume, or ends at
        once as interrupted, so it can be retried.
        """
        live = _LiveJob(job, self.store, self.interval, self.heartbeat_every)
        if not self._accepting:
            self._stop_for_shutdown(live, operation)
            return
        self._live[job.id] = live
        self._operations[job.id] = operation
        thread = threading.Thread(target=self._run, args=(live, operation, params, checkpoints), daemon=True,
                                  name=f"job-{job.id}")
        self._threads[job.id] = thread
        thread.start()

    def may_resume(self, job: Job, operation: Operation) -> bool:
        """Whether another attempt of ``job`` may run: its operation allows it and attempts remain."""
        return operation.resumable and job.attempt < self.max_attempts

    def _run(self, live: _LiveJob, operation: Operation, params: dict[str, Any],
             checkpoints: dict[str, Any] | None) -> None:
        job = live.job
        pulse = threading.Thread(target=live.pulse, daemon=True, name=f"pulse-{job.id}")
        try:
            with self.app.app_context(), logs.job_context(job):
                pulse.start()
                self._execute(live, operation, params, checkpoints)
        finally:
            live.finished = True
            live.wake.set()
            self._live.pop(job.id, None)
            self._threads.pop(job.id, None)
            self._operations.pop(job.id, None)
            signals.job_stopped.send(job)

    def _execute(self, live: _LiveJob, operation: Operation, params: dict[str, Any],
                 checkpoints: dict[str, Any] | None = None) -> None:
        from ..extensions import db

        job = live.job
        with live.lock:
            job.status = JobStatus.RUNNING
            job.started_at = job.started_at if job.attempt > 1 and job.started_at else iso(utcnow())
            job.message = job.message if job.message and job.message != "Waiting to start" else "Starting"
            live.flush(status_change=True)
        if job.attempt > 1:
            log.info("job %s resumed (%s, attempt %d of %d)", job.id, job.job_type, job.attempt, self.max_attempts,
                     extra=_log_extra(job))
        else:
            log.info("job %s started (%s)", job.id, job.job_type, extra=_log_extra(job))
        signals.job_started.send(job)
        ctx = JobContext(live, params, self.app.config, checkpoints)
        try:
            live.raise_if_stopped()
            result = operation.fn(ctx) or {}
        except JobCancelled:
            self._finish(live, JobStatus.CANCELLED, message="Cancelled")
        except ShuttingDown:
            if not live.reaped:
                self._stop_for_shutdown(live, operation)
        except OperationError as exc:
            log.info("job %s failed: %s", job.id, exc.message, extra=_log_extra(job))
            self._finish(live, JobStatus.FAILED, message="Failed", error_code=exc.code, error=exc.message)
        except Exception:
            log.exception("job %s (%s) raised", job.id, job.job_type, extra=_log_extra(job))
            self._finish(live, JobStatus.FAILED, message="Failed", error_code="internal_error",
                         error=f"Something went wrong during {operation.title.lower()}. "
                               f"The error was logged (reference {job.id[:8]}); you can retry.")
        else:
            result = dict(result)
            result.setdefault("ready", operation.ready)
            result.setdefault("view_label", operation.view_label)
            self._finish(live, JobStatus.COMPLETED, message=operation.ready, result=result)
        finally:
            db.session.remove()

    def _finish(self, live: _LiveJob, status: JobStatus, *, message: str, error_code: str | None = None,
                error: str | None = None, result: dict[str, Any] | None = None, patient: bool = True) -> None:
        """Record the terminal state: Redis first (what users watch), then the database.

        ``patient``: if Redis cannot take it, keep trying until it can (in the job's own thread).
        A stopping process cannot wait; the reaper then ends the job from its lapsed heartbeat.
        """
        job = live.job
        with live.lock:
            if live.finalized:
                return
            live.finalized = True
            live.finished = True
            if live.reaped:
                return  # the reaper wrote the terminal state (Redis and database); it is final
            job.status = status
            if status is JobStatus.COMPLETED:
                job.progress = 100
            job.message = message
            job.error_code = error_code
            job.error = error
            job.result = result
            job.cancel_requested = False
            job.completed_at = iso(utcnow())
            saved = live.flush(status_change=True)
        if live.reaped:
            return
        log.info("job %s %s", job.id, status.value, extra=_log_extra(job))
        recorded = self.on_terminal(job)
        if not saved and patient:
            self._retry_terminal_write(live, recorded)
        signals.job_finished.send(job)

    def _retry_terminal_write(self, live: _LiveJob, recorded: bool) -> None:
        """Keep writing the terminal state to Redis until it is back.

        Then the hash gets its retention TTL if the database has the state (``recorded``), or the
        job goes to the outbox if neither the database nor Redis could take it before.
        """
        delay = 0.5
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline and not live.reaped:
            time.sleep(delay)
            if live.flush(status_change=True):
                try:
                    if recorded:
                        self.store.expire(live.job.id)
                    else:
                        self.store.outbox_add(live.job.id)
                except redis.RedisError as exc:
                    log.warning("job %s: terminal state back in Redis, but %s failed (%s)", live.job.id,
                                "its expiry" if recorded else "queueing it for the database", exc,
                                extra=_log_extra(live.job))
                return
            delay = min(delay * 2, 10.0)
        if not live.reaped:
            log.error("job %s: gave up writing its terminal state to Redis after an hour", live.job.id,
                      extra=_log_extra(live.job))

    # -- shutdown ------------------------------------------------------------------------------
    def shutdown(self, grace: float) -> list[str]:
        """Stop taking jobs, let running ones finish within ``grace`` seconds, hand the rest over.

        The last part of the grace (a quarter, at most 2 s) is for the jobs told to stop to end
        themselves at their next check; whatever still runs then is handed over on the spot (see
        ``_stop_for_shutdown``). Returns the ids of the jobs that were told to stop.
        """
        self._accepting = False
        deadline = time.monotonic() + max(0.0, grace)
        self._join_all(deadline - min(2.0, grace / 4))
        stopping = list(self._live.values())
        if stopping:
            log.warning("shutting down: stopping %d running job(s)", len(stopping))
        for live in stopping:
            live.shutting_down = True
            live.stopped.set()
        self._join_all(deadline)
        # An operation that never checks for cancellation is still running: hand it over (or record
        # it as interrupted) now, before the process goes; its own late ending is then ignored.
        for live in list(self._live.values()):
            self._stop_for_shutdown(live, self._operations.get(live.job.id))
        return [live.job.id for live in stopping]

    def _stop_for_shutdown(self, live: _LiveJob, operation: Operation | None) -> None:
        """A job this stopping process cannot finish: left for another process to resume (its deadline
        passes at once) when its operation allows another attempt, else ended as interrupted."""
        job = live.job
        if operation is not None and self.may_resume(job, operation) and live.release():
            try:
                handed = self.store.hand_over(job)
            except redis.RedisError as exc:
                handed = False
                log.warning("job %s: could not hand it over (%s); it is resumed once its heartbeat lapses",
                            job.id, exc, extra=_log_extra(job))
            if handed:
                log.warning("job %s: handed over to be resumed by another process (attempt %d of %d ends here)",
                            job.id, job.attempt, self.max_attempts, extra=_log_extra(job))
            return
        self._finish(live, JobStatus.FAILED, message="Interrupted", error_code="interrupted",
                     error=INTERRUPTED_BY_SHUTDOWN, patient=False)

    def _join_all(self, until: float) -> None:
        for thread in list(self._threads.values()):
            thread.join(max(0.0, until - time.monotonic()))


def _log_extra(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "job_type": job.job_type, "user_id": job.user_id}
