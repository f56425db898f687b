"""Upkeep: what keeps the job system whole when processes die and backends fail.

Its tasks: reconcile Redis after it lost its data, adopt database rows Redis does not know, reap the
jobs whose heartbeat lapsed (resuming those that may run again, ending the rest through the one finish
path: ``JobStore.write`` then ``Records.record_terminal``), and flush the outbox. Every app process
runs them on a timer; a short Redis lock lets one of them do the work at a time. Each task stands
alone, so a database outage does not stop the reaper and a Redis outage does not stop the rest from
trying again next round.

The process holding the lock also wakes when the earliest heartbeat deadline in ``jobs:active`` passes
(one ``ZRANGEBYSCORE … LIMIT 1`` per wake tells it when) and reaps then, so a dead worker's job is taken
over about ``EPM_HEARTBEAT_TIMEOUT`` after its last heartbeat rather than up to a whole upkeep interval
later. Live runners push their deadlines forward every second, so these wakes happen only for a job that
really went silent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import redis
from sqlalchemy.exc import SQLAlchemyError

from .. import signals
from ..errors import NotFound
from ..extensions import db
from ..logs import job_fields
from . import steps
from .job import INTERRUPTED_MESSAGE, RESUMED_MESSAGE, Job, JobStatus, iso, utcnow
from .registry import get_operation

if TYPE_CHECKING:
    from flask import Flask

    from .records import Records
    from .runner import Runner
    from .store import JobStore

log = logging.getLogger("epm.jobs")

LOCK = "upkeep"
#: a deadline wake comes this long after the deadline (the reaper takes only deadlines already passed)
DEADLINE_SLACK = 0.02
#: the shortest wait between two wakes of the loop
MIN_WAIT = 0.01


class Upkeep:
    """Reconciliation after Redis lost its data, orphan adoption, the reaper and the outbox flusher, on one timer."""

    def __init__(self, app: Flask, store: JobStore, records: Records, runner: Runner):
        self.app = app
        self.store = store
        self.records = records
        self.runner = runner
        self.interval = float(app.config["EPM_MAINTENANCE_INTERVAL"])
        # After Redis was unreachable, live runners need a few heartbeats to push their deadlines
        # forward again; reaping before that would end jobs that are in fact running.
        self.settle = 3 * runner.heartbeat_every
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._reap_after = 0.0
        self._redis_lost = False
        self._failing: set[str] = set()

    def run_once(self) -> dict[str, int]:
        """One round of upkeep, whoever holds the lock; returns what was done."""
        tasks: list[tuple[str, Callable[[], int]]] = [
            ("reconciled", self.reconcile_lost_data),
            ("adopted", self.adopt_orphans),
            ("reaped", lambda: self._reap(done)),
            ("flushed", self.records.flush_outbox),
        ]
        if time.monotonic() < self._reap_after:
            tasks = [task for task in tasks if task[0] != "reaped"]
        done = {name: 0 for name in ("reconciled", "adopted", "reaped", "resumed", "flushed")}
        with self.app.app_context():
            try:
                for name, task in tasks:
                    done[name] = self._attempt(name, task)
            finally:
                db.session.remove()
        if any(done.values()):
            log.info("maintenance: %s", ", ".join(f"{name} {count}" for name, count in done.items()))
        return done

    def reap_once(self) -> int:
        """The reaper alone (a deadline passed between two rounds); returns the jobs it handled."""
        if time.monotonic() < self._reap_after:
            return 0
        done = {"resumed": 0}
        with self.app.app_context():
            try:
                reaped = self._attempt("reaped", lambda: self._reap(done))
            finally:
                db.session.remove()
        if reaped:
            log.info("maintenance: reaped %d (resumed %d) at their deadline", reaped, done["resumed"])
        return reaped

    def _reap(self, done: dict[str, int]) -> int:
        """Reap; count the jobs resumed here apart from those ended (``reaped`` counts both)."""
        handled = self.reap()
        done["resumed"] = sum(1 for job in handled if not job.is_terminal)
        return len(handled)

    def reap(self, *, resume: bool = True) -> list[Job]:
        """Resume or end the jobs whose heartbeat lapsed; return them as they are now.

        With ``resume``, a job of a resumable operation with attempts left runs again in this process
        (attempt + 1, same id); any other is marked failed/interrupted (or cancelled, if the user asked).
        Each job is taken over by one atomic write keyed on that job alone, so one process of many
        resumes it, once.
        """
        handled = []
        for job_id in self.store.overdue_ids():
            if job_id in self.runner.running:
                continue
            job = self._take_over(job_id, resume)
            if job is not None:
                handled.append(job)
        return handled

    def _take_over(self, job_id: str, resume: bool) -> Job | None:
        fallback = None
        job = self.store.load(job_id)
        if job is None:
            # Redis lost the job's hash: the database says what it was.
            try:
                row = self.records.row(job_id)
            except SQLAlchemyError as exc:
                db.session.rollback()
                log.warning("reaper: job %s left for later: its hash is gone and the database is "
                            "unavailable (%s)", job_id, exc, extra={"job_id": job_id})
                return None
            job = fallback = row.to_job() if row is not None else None
            if job is not None:
                # A cancel asked for after the loss is all Redis holds of the job now.
                job.cancel_requested = self.store.cancel_requested(job_id)
        if resume and job is not None and not job.is_terminal and not job.cancel_requested:
            resumed = self._resume(job, fallback)
            if resumed is not False:
                return resumed
        cancelled = job is not None and job.cancel_requested
        job = end_orphan(self.store, job_id, JobStatus.CANCELLED if cancelled else JobStatus.FAILED,
                                       error_code=None if cancelled else "interrupted",
                                       error=None if cancelled else INTERRUPTED_MESSAGE, fallback=fallback)
        if job is None:
            return None
        log.warning("reaper: job %s %s (no heartbeat)", job_id, job.status.value if cancelled else "interrupted",
                    extra=job_fields(job))
        signals.job_reaped.send(job)
        self.records.record_terminal(job)
        return job

    def _resume(self, job: Job, fallback: Job | None) -> Job | None | bool:
        """Run another attempt of ``job`` here if it may; the job, None if another process won, False if
        it may not be resumed (the caller ends it)."""
        try:
            operation = get_operation(job.job_type)
        except NotFound:
            return False
        if not self.runner.may_resume(job, operation):
            return False
        if not self.runner.accepting:
            return None  # this process is stopping: another one resumes the job
        params = self.store.params(job.id) if fallback is None else None
        if params is None:
            try:
                row = self.records.row(job.id)
            except SQLAlchemyError as exc:
                db.session.rollback()
                log.warning("reaper: job %s left for later: its parameters are only in the database, which is "
                            "unavailable (%s)", job.id, exc, extra=job_fields(job))
                return None
            params = (row.params if row is not None else None) or {}
        checkpoints = self.store.checkpoints(job.id) if fallback is None else {}
        claimed = self.store.take_over(job.id, _next_attempt, fallback=fallback)
        if claimed is None:
            return None
        log.warning("reaper: job %s resumed here (attempt %d of %d; no heartbeat from the last one)", job.id,
                    claimed.attempt, self.runner.max_attempts, extra=job_fields(claimed))
        signals.job_resumed.send(claimed)
        taken = replace(claimed, extra=dict(claimed.extra))  # the runner changes ``claimed`` as it runs
        self.runner.submit(claimed, operation, params, checkpoints)
        return taken

    def adopt_orphans(self) -> int:
        """Put database rows still active but unknown to Redis under the reaper's watch.

        Such rows appear after a crash before the runner's first write, or when Redis lost its
        data. Each gets a heartbeat deadline; a live runner refreshes it (and re-writes its state),
        a dead one lets it lapse and the reaper interrupts the job. Returns how many were adopted.
        """
        grace = timedelta(seconds=float(self.app.config["EPM_HEARTBEAT_TIMEOUT"]))
        rows = self.records.active_since_before(datetime.now(UTC) - grace)
        if not rows:
            return 0
        known = self.store.active_ids()
        live = self.store.load_many(row.id for row in rows if row.id not in known)
        adopted = 0
        for row in rows:
            if row.id in known or row.id in self.runner.running:
                continue
            job = live.get(row.id)
            if job is not None and job.is_terminal:
                self.store.outbox_add(row.id)
                continue
            self.store.give_deadline(row.id)
            adopted += 1
        return adopted

    def reconcile_lost_data(self, limit: int = 5000) -> int:
        """After Redis lost its data, put recently finished jobs back from PostgreSQL; return how many.

        Their hashes (with the retention TTL) and user indexes come back, so the event streams'
        snapshots show them as finished again. Active rows are adopted instead (``adopt_orphans``).
        Runs once per loss: a marker key in Redis says whether it is needed.
        """
        if not self.store.lost_data():
            return 0
        try:
            since = datetime.now(UTC) - timedelta(seconds=int(self.app.config["EPM_RETENTION_SECONDS"]))
            restored = self.store.restore(self.records.finished_since(since, limit))
        except (SQLAlchemyError, redis.RedisError):
            db.session.rollback()
            self.store.forget_marker()
            raise
        if restored:
            log.warning("%d finished job(s) missing from Redis (restarted without its data, flushed, or new) "
                        "restored from the database", restored)
        return restored

    def _attempt(self, name: str, task: Callable[[], int]) -> int:
        try:
            count = task()
        except (redis.RedisError, SQLAlchemyError) as exc:
            db.session.rollback()
            signals.backend_error.send(exc, backend="redis" if isinstance(exc, redis.RedisError) else "database")
            if isinstance(exc, redis.RedisError):
                self._redis_lost = True
            if name not in self._failing:
                log.warning("maintenance: %s skipped until its backend is back: %s", name, exc)
                self._failing.add(name)
            return 0
        if name in self._failing:
            log.info("maintenance: %s works again", name)
            self._failing.discard(name)
        return count

    def start(self) -> None:
        """Run the loop in the background; the first round comes after one interval, or at ``kick``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="epm-maintenance")
            self._thread.start()

    def kick(self) -> None:
        """Run a round now (a server process starting: reconcile what the last one left behind)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the loop and hand the lock to another process at once."""
        self._stop.set()
        self._wake.set()
        try:
            self.store.release_maintenance(LOCK, self.owner)
        except redis.RedisError as exc:
            log.info("maintenance: lock not released (%s); it expires by itself", exc)

    def _loop(self) -> None:
        wait = self.interval
        next_round = 0.0  # monotonic time of the next whole round
        while True:
            self._wake.wait(wait)
            kicked = self._wake.is_set()
            self._wake.clear()
            if self._stop.is_set():
                return
            wait = self.interval
            try:
                if not self.store.claim_maintenance(LOCK, self.owner, self.interval * 3):
                    next_round = 0.0  # whoever holds the lock does the rounds; a whole one first if it comes here
                    continue
            except redis.RedisError as exc:
                if not self._redis_lost:
                    log.warning("maintenance: Redis unavailable (%s); waiting for it", exc)
                self._redis_lost = True
                continue
            if self._redis_lost:
                self._redis_lost = False
                self._reap_after = time.monotonic() + self.settle
                log.info("maintenance: Redis is back; reaping resumes in %.1fs", self.settle)
            try:
                # The reaper below takes the deadlines passed by now; one passing while it works is woken for.
                checked = time.time()
                if kicked or time.monotonic() >= next_round:
                    self.run_once()
                    next_round = time.monotonic() + self.interval
                else:
                    self.reap_once()
                wait = self._until_next(next_round, checked)
            except Exception:
                log.exception("maintenance failed")

    def _until_next(self, next_round: float, checked: float) -> float:
        """Seconds until the next whole round or the earliest heartbeat deadline after ``checked`` (when the
        reaper last looked), whichever is first: at once for a deadline that passed while the reaper worked."""
        wait = next_round - time.monotonic()
        try:
            deadline = self.store.next_deadline(checked)
        except redis.RedisError:
            deadline = None  # the next round says so
        if deadline is not None:
            wait = min(wait, deadline - time.time() + DEADLINE_SLACK)
        return max(MIN_WAIT, wait)


def _next_attempt(job: Job) -> Job:
    """``job`` as the next attempt takes it over: the last attempt goes into its history."""
    now = iso(utcnow())
    history = list(job.attempts or [])
    began = history[-1]["ended_at"] if history else (job.started_at or job.created_at)
    history.append({"attempt": job.attempt, "started_at": began, "ended_at": now, "ended": "interrupted"})
    job.attempts = history
    job.attempt += 1
    job.status = JobStatus.RUNNING
    job.message = RESUMED_MESSAGE
    job.updated_at = now
    job.cancel_requested = False
    return job


def end_orphan(store: JobStore, job_id: str, status: JobStatus, *, error_code: str | None, error: str | None,
               require_overdue: bool = True, fallback: Job | None = None) -> Job | None:
    """End a job nobody is running (``JobStore.take_over``); the job as ended, or None if it was not orphaned."""

    def end(job: Job) -> Job:
        steps.finish(job, at=job.updated_at)  # its runner was last heard of then
        now = iso(utcnow())
        job.status = status
        job.error_code = error_code
        job.error = error
        job.updated_at = now
        job.completed_at = now
        job.cancel_requested = False
        return job

    return store.take_over(job_id, end, require_overdue=require_overdue, fallback=fallback)
