"""Runner: executes an operation as a job, from ``running`` to exactly one terminal state.

A job runs in the web process itself: a greenlet under gunicorn's gevent worker, a thread elsewhere
(``threading`` is monkey-patched under gevent, so the same code gives either). Beside the operation its
pulse (``live.LiveJob``) writes its state to Redis, refreshes the heartbeat on its own timer and
notices cancel requests, so a job that computes for a while is not taken for dead.

A terminal state goes to Redis first (what users watch: ``JobStore.write``, the one way a whole state
is written) and then to PostgreSQL (``on_terminal``: ``Records.record_terminal``, the one way it is
recorded); the reaper, cancel and reconciliation go the same two ways.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from .. import logs, signals
from ..logs import job_fields
from . import steps
from .context import JobCancelled, JobContext, OperationError, ShuttingDown
from .job import INTERRUPTED_MESSAGE, Job, JobStatus, iso, utcnow
from .live import LIVE, LiveJob, Phase
from .registry import Operation

if TYPE_CHECKING:
    from flask import Flask

    from .store import JobStore

log = logging.getLogger("epm.jobs")


class Runner:
    """Starts jobs in the background of this process and carries each to a terminal state."""

    def __init__(self, app: Flask, store: JobStore, on_terminal: Callable[[Job], bool]):
        self.app = app
        self.store = store
        self.on_terminal = on_terminal
        self.interval = float(app.config["EPM_PROGRESS_INTERVAL"])
        self.heartbeat_every = min(1.0, float(app.config["EPM_HEARTBEAT_TIMEOUT"]) / 3)
        self.max_attempts = int(app.config["EPM_MAX_ATTEMPTS"])
        self._live: dict[str, LiveJob] = {}
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
        live = LiveJob(job, self.store, self.interval, self.heartbeat_every, checkpoints)
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

    def _run(self, live: LiveJob, operation: Operation, params: dict[str, Any],
             checkpoints: dict[str, Any] | None) -> None:
        job = live.job
        try:
            with self.app.app_context(), logs.job_context(job):
                self._execute(live, operation, params, checkpoints)
        finally:
            if live.phase in (Phase.RUNNING, Phase.CANCELLING, Phase.STOPPING):
                log.error("job %s: its run ended without a terminal state; the reaper takes it", job.id,
                          extra=job_fields(job))
                live.abandon()
            self._live.pop(job.id, None)
            self._threads.pop(job.id, None)
            self._operations.pop(job.id, None)
            signals.job_stopped.send(job)

    def _execute(self, live: LiveJob, operation: Operation, params: dict[str, Any],
                 checkpoints: dict[str, Any] | None = None) -> None:
        from ..extensions import db

        job = live.job
        with live.lock:
            job.status = JobStatus.RUNNING
            job.started_at = job.started_at if job.attempt > 1 and job.started_at else iso(utcnow())
            job.message = job.message if job.message and job.message != "Waiting to start" else "Starting"
            steps.begin(job, operation.steps, self.store)
        live.begin()
        if job.attempt > 1:
            log.info("job %s resumed (%s, attempt %d of %d)", job.id, job.job_type, job.attempt, self.max_attempts,
                     extra=job_fields(job))
        else:
            log.info("job %s started (%s)", job.id, job.job_type, extra=job_fields(job))
        signals.job_started.send(job)
        ctx = JobContext(live, params, self.app.config, checkpoints)
        try:
            live.raise_if_stopped()
            result = operation.fn(ctx) or {}
        except JobCancelled:
            self._finish(live, JobStatus.CANCELLED, message="Cancelled")
        except ShuttingDown:
            if live.phase is Phase.STOPPING:
                self._stop_for_shutdown(live, operation)
        except OperationError as exc:
            log.info("job %s failed: %s", job.id, exc.message, extra=job_fields(job))
            self._finish(live, JobStatus.FAILED, message="Failed", error_code=exc.code, error=exc.message)
        except Exception:
            log.exception("job %s (%s) raised", job.id, job.job_type, extra=job_fields(job))
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

    def _finish(self, live: LiveJob, status: JobStatus, *, message: str, error_code: str | None = None,
                error: str | None = None, result: dict[str, Any] | None = None, patient: bool = True) -> None:
        """Record the terminal state: Redis first (what users watch, written by the pulse), then the database.

        Nothing is recorded when the job already ended otherwise (a reaper's state stands).
        """
        job = live.job
        completed_at = iso(utcnow())
        if status is JobStatus.COMPLETED and live.phase in LIVE:
            # Its durations go into the history before its end is seen: the next run started on seeing it
            # counts this one in its estimate.
            steps.remember_ending(self.store, job, completed_at)
        if not live.end(status, message=message, error_code=error_code, error=error, result=result,
                        patient=patient, completed_at=completed_at):
            return
        log.info("job %s %s", job.id, status.value, extra=job_fields(job))
        live.recorded(self.on_terminal(job))
        signals.job_finished.send(job)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the jobs running here to end; True if none runs any more."""
        self._join_all(time.monotonic() + timeout)
        return not self._live

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
            live.stop()
        self._join_all(deadline)
        # An operation that never checks for cancellation is still running: hand it over (or record
        # it as interrupted) now, before the process goes; its own late ending is then ignored.
        for live in list(self._live.values()):
            self._stop_for_shutdown(live, self._operations.get(live.job.id))
        return [live.job.id for live in stopping]

    def _stop_for_shutdown(self, live: LiveJob, operation: Operation | None) -> None:
        """A job this stopping process cannot finish: left for another process to resume (its deadline
        passes at once) when its operation allows another attempt, else ended as interrupted."""
        job = live.job
        if operation is not None and self.may_resume(job, operation) and live.release():
            try:
                handed = self.store.hand_over(job)
            except redis.RedisError as exc:
                handed = False
                log.warning("job %s: could not hand it over (%s); it is resumed once its heartbeat lapses",
                            job.id, exc, extra=job_fields(job))
            if handed:
                log.warning("job %s: handed over to be resumed by another process (attempt %d of %d ends here)",
                            job.id, job.attempt, self.max_attempts, extra=job_fields(job))
            return
        self._finish(live, JobStatus.FAILED, message="Interrupted", error_code="interrupted",
                     error=INTERRUPTED_MESSAGE, patient=False)

    def _join_all(self, until: float) -> None:
        for thread in list(self._threads.values()):
            thread.join(max(0.0, until - time.monotonic()))
