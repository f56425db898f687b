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

from . import signals
from .job import Job, JobStatus, iso, next_seq, utcnow
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
    """What an operation sees of its job: its parameters, progress reporting, cancellation."""

    def __init__(self, live: _LiveJob, params: dict[str, Any], config: dict[str, Any]):
        self._live = live
        self.job_id = live.job.id
        self.user_id = live.job.user_id
        self.session_id = live.job.session_id
        self.params = params
        self.config = config

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0-100) and what is happening; cheap, coalesced to ~10 writes a second."""
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
        return run_blocking(fn, *args, **kwargs)


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

    # -- called from the operation ---------------------------------------------------------------
    def report(self, percent: float, message: str | None) -> None:
        with self.lock:
            pct = max(0, min(100, int(percent)))
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
        if self.shutting_down:
            raise ShuttingDown()

    def wait_stopped(self, seconds: float) -> None:
        self.stopped.wait(seconds)

    # -- writing -----------------------------------------------------------------------------------
    def flush(self, *, status_change: bool = False) -> bool:
        """Write the whole state to Redis now; False (and logged) when Redis is unreachable."""
        with self.lock:
            self.job.seq = next_seq(self.job.seq)
            self.job.updated_at = iso(utcnow())
            self.dirty = False
            self.last_write = time.monotonic()
            try:
                self.store.save(self.job)
            except redis.RedisError as exc:
                # Keep working: the next save writes the whole state again, so nothing is lost.
                if not self.redis_failing:
                    log.warning("job %s: Redis write failed (%s); the job goes on and re-writes its state "
                                "when Redis is back", self.job.id, exc, extra=_log_extra(self.job))
                self.redis_failing = True
                self.dirty = True
                return False
            if self.redis_failing:
                log.info("job %s: Redis is back; full state re-written", self.job.id, extra=_log_extra(self.job))
                self.redis_failing = False
            signals.job_saved.send(self.job, status_change=status_change)
            return True

    def pulse(self) -> None:
        """Until the job finishes: heartbeat, deliver coalesced progress, notice cancel requests."""
        next_beat = 0.0
        while not self.finished:
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
        try:
            cancel, present = self.store.heartbeat(self.job.id)
        except redis.RedisError:
            self.redis_failing = True
            self.dirty = True
            return
        if not present or self.redis_failing:
            # Redis lost the job (restart without persistence, FLUSHALL): write it all back.
            self.flush()
        if cancel and not self.cancelled:
            self.cancelled = True
            self.stopped.set()


class Runner:
    """Starts jobs in the background of this process and carries each to a terminal state."""

    def __init__(self, app: Flask, store: JobStore, on_terminal: Callable[[Job], None]):
        self.app = app
        self.store = store
        self.on_terminal = on_terminal
        self.interval = float(app.config["EPM_PROGRESS_INTERVAL"])
        self.heartbeat_every = min(1.0, float(app.config["EPM_HEARTBEAT_TIMEOUT"]) / 3)
        self._live: dict[str, _LiveJob] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._accepting = True

    @property
    def running(self) -> list[str]:
        return list(self._live)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def submit(self, job: Job, operation: Operation, params: dict[str, Any]) -> None:
        """Run ``operation`` for ``job`` (already saved as pending) in the background."""
        live = _LiveJob(job, self.store, self.interval, self.heartbeat_every)
        self._live[job.id] = live
        thread = threading.Thread(target=self._run, args=(live, operation, params), daemon=True,
                                  name=f"job-{job.id}")
        self._threads[job.id] = thread
        thread.start()

    def _run(self, live: _LiveJob, operation: Operation, params: dict[str, Any]) -> None:
        job = live.job
        pulse = threading.Thread(target=live.pulse, daemon=True, name=f"pulse-{job.id}")
        try:
            with self.app.app_context():
                pulse.start()
                self._execute(live, operation, params)
        finally:
            live.finished = True
            live.wake.set()
            self._live.pop(job.id, None)
            self._threads.pop(job.id, None)

    def _execute(self, live: _LiveJob, operation: Operation, params: dict[str, Any]) -> None:
        from ..extensions import db

        job = live.job
        with live.lock:
            job.status = JobStatus.RUNNING
            job.started_at = iso(utcnow())
            job.message = job.message if job.message and job.message != "Waiting to start" else "Starting"
            live.flush(status_change=True)
        log.info("job %s started (%s)", job.id, job.job_type, extra=_log_extra(job))
        signals.job_started.send(job)
        ctx = JobContext(live, params, self.app.config)
        try:
            live.raise_if_stopped()
            result = operation.fn(ctx) or {}
        except JobCancelled:
            self._finish(live, JobStatus.CANCELLED, message="Cancelled")
        except ShuttingDown:
            self._finish(live, JobStatus.FAILED, message="Interrupted", error_code="interrupted",
                         error="The server restarted before this job finished. Retry it to run it again.")
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
                error: str | None = None, result: dict[str, Any] | None = None) -> None:
        job = live.job
        with live.lock:
            if live.finalized:
                return
            live.finalized = True
            live.finished = True
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
        log.info("job %s %s", job.id, status.value, extra=_log_extra(job))
        self.on_terminal(job)
        if not saved:
            self._retry_terminal_write(live)
        signals.job_finished.send(job)

    def _retry_terminal_write(self, live: _LiveJob) -> None:
        """Keep writing the terminal state to Redis until it is back (the database already has it)."""
        delay = 0.5
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            time.sleep(delay)
            if live.flush(status_change=True):
                self.store.expire(live.job.id)
                return
            delay = min(delay * 2, 10.0)
        log.error("job %s: gave up writing its terminal state to Redis after an hour", live.job.id,
                  extra=_log_extra(live.job))

    # -- shutdown ------------------------------------------------------------------------------
    def shutdown(self, grace: float) -> list[str]:
        """Stop taking jobs, let running ones finish within ``grace`` seconds, interrupt the rest.

        Returns the ids of the jobs that had to be interrupted.
        """
        self._accepting = False
        deadline = time.monotonic() + grace
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        interrupted = list(self._live)
        for live in list(self._live.values()):
            live.shutting_down = True
            live.stopped.set()
        for job_id in interrupted:
            thread = self._threads.get(job_id)
            if thread is not None:
                thread.join(2.0)
        # An operation that never checks for cancellation is still running: record it as interrupted
        # now, before the process goes; its own late ending is then ignored (terminal states are final).
        for live in list(self._live.values()):
            self._finish(live, JobStatus.FAILED, message="Interrupted", error_code="interrupted",
                         error="The server restarted before this job finished. Retry it to run it again.")
        return interrupted


def _log_extra(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "job_type": job.job_type, "user_id": job.user_id}
