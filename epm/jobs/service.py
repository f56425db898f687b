"""JobService: the one way the app, its pages, its API and its CLI act on jobs.

Start, read, list, cancel, retry, acknowledge, and what an operator's command needs. Live state comes
from Redis (``JobStore``); the durable record is the ``background_jobs`` row (``Records``); running is the
``Runner``'s, and keeping the system whole when processes die is ``Upkeep``'s. Callers use this service
and nothing behind it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from contextlib import suppress
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis
from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from ..errors import BackendDown, Conflict, DuplicateJob, JobNotFound, TooManyRunning
from ..extensions import db
from ..logs import job_fields
from .job import Job, JobStatus, iso, next_seq, utcnow
from .records import ACTIVE_STATUSES, Records
from .registry import get_operation
from .runner import Runner
from .upkeep import Upkeep, end_orphan

if TYPE_CHECKING:
    from flask import Flask

    from .store import JobStore

log = logging.getLogger("epm.jobs")

__all__ = ["ACTIVE_STATUSES", "JobService", "current_jobs"]


def current_jobs() -> JobService:
    """The job service of the current app."""
    return current_app.extensions["epm.jobs"]


class JobService:
    """The one way the rest of the app acts on jobs."""

    def __init__(self, app: Flask, store: JobStore):
        self.app = app
        self.store = store
        self.records = Records(app, store)
        self.runner = Runner(app, store, on_terminal=self.records.record_terminal)
        self.upkeep = Upkeep(app, store, self.records, self.runner)

    # -- starting ------------------------------------------------------------------------------
    def start(self, job_type: str, *, user_id: str, session_id: str | None = None,
              params: dict[str, Any] | None = None, retry_of: str | None = None) -> Job:
        """Create the job, record it, and run it in the background; return it as pending.

        Raises ``DuplicateJob`` when the same operation is already active for the session
        (atomic across instances: the lock key is taken with SET NX).
        """
        operation = get_operation(job_type)
        params = operation.clean_params(params or {})
        if not self.runner.accepting:
            raise BackendDown("This server is restarting; start the job again in a moment.",
                              code="shutting_down")
        now = iso(utcnow())
        job = Job(id=uuid.uuid4().hex, job_type=job_type, user_id=str(user_id), title=operation.title,
                  status=JobStatus.PENDING, message="Waiting to start", session_id=session_id,
                  created_at=now, updated_at=now, retry_of=retry_of)
        job.seq = next_seq(0)
        self._take_lock(job)
        self._admit(job)
        try:
            self.records.create(job, params or {})
        except BackendDown:
            self.store.release_lock(job)
            self.store.leave(job)
            raise
        try:
            self.store.save_new(job, params or {})
        except redis.RedisError:
            self._forget(job)
            raise
        # The runner owns ``job`` from here and changes it as it runs: answer with the state as started.
        started = replace(job, extra=dict(job.extra))
        log.info("job %s created (%s%s)", job.id, job_type, f", retry of {retry_of}" if retry_of else "",
                 extra=job_fields(job))
        self.runner.submit(job, operation, params or {})
        return started

    def _admit(self, job: Job) -> None:
        """Hold the account to ``EPM_MAX_RUNNING_PER_USER`` active jobs: one more is refused with 429."""
        limit = int(self.app.config["EPM_MAX_RUNNING_PER_USER"])
        try:
            running = self.store.admit(job, limit)
        except redis.RedisError:
            self.store.release_lock(job)
            raise
        if running:
            self.store.release_lock(job)
            jobs = self.store.load_many(running)
            listed = [jobs[job_id].to_dict() for job_id in running if job_id in jobs]
            listed.sort(key=lambda item: item.get("created_at") or "")
            log.info("job not started: user %s already runs %d job(s)", job.user_id, len(running),
                     extra=job_fields(job))
            raise TooManyRunning(limit, listed)

    def share(self, user_id: str) -> tuple[int, int]:
        """(jobs the account runs now, the most it may run at once): what the start buttons say."""
        return len(self.store.running_ids(str(user_id))), int(self.app.config["EPM_MAX_RUNNING_PER_USER"])

    def _forget(self, job: Job) -> None:
        """Undo a start that could not reach Redis: no row, no lock, as if it never began."""
        self.records.forget(job)
        # Redis is what failed; if the lock stays, the next start finds it stale (its holder has no state).
        with suppress(redis.RedisError):
            self.store.release_lock(job)
        with suppress(redis.RedisError):
            self.store.leave(job)

    def _take_lock(self, job: Job) -> None:
        for _ in range(3):
            holder_id = self.store.acquire_lock(job)
            if holder_id is None:
                return
            holder = self.store.load(holder_id)
            if holder is not None and not holder.is_terminal:
                raise DuplicateJob(self._with_ack(holder).to_dict())
            # The holder finished (or vanished) without letting go: a stale lock.
            self.store.release_lock(holder or Job(id=holder_id, job_type=job.job_type, user_id=job.user_id,
                                                  session_id=job.session_id))
        raise Conflict("Could not start the job; try again.", code="lock_busy")

    def retry(self, job_id: str, user_id: str) -> Job:
        """Start the same operation with the same parameters as a failed or cancelled job."""
        old = self.get(job_id, user_id)
        if old.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise Conflict(f"Only a failed or cancelled job can be retried; this one is {old.status.value}.",
                           code="not_retryable")
        return self.start(old.job_type, user_id=user_id, session_id=old.session_id,
                          params=self.records.params(job_id), retry_of=old.id)

    # -- reading -------------------------------------------------------------------------------
    def get(self, job_id: str, user_id: str) -> Job:
        """The job's newest state; ``JobNotFound`` for another user's job, never revealing it exists."""
        job = self.store.load(job_id)
        row = None
        if job is None or job.is_terminal:
            try:
                row = self.records.row(job_id)
            except SQLAlchemyError:
                if job is None:
                    raise
                # The database is down but Redis has the job: show it (the user sees how it ended).
                db.session.rollback()
        if job is None and row is not None:
            job = row.to_job()
        if job is None or job.user_id != str(user_id):
            raise JobNotFound(job_id)
        if row is not None:
            job.extra["acknowledged"] = row.acknowledged_at is not None
        return job

    def jobs(self, user_id: str | None, *, limit: int = 20, status: str | None = None, job_type: str | None = None,
             session_id: str | None = None, recorded: bool = False) -> list[Job]:
        """The user's jobs (everyone's for ``None``: operators), newest first: database rows with the live
        state from Redis laid over them. ``recorded`` adds the row's own status (``recorded_status``).

        While the database is down the recent jobs Redis holds answer instead (filtered the same way),
        so the live view keeps working through the outage.
        """
        try:
            return self._list_rows(user_id, limit=limit, status=status, job_type=job_type, session_id=session_id,
                                   recorded=recorded)
        except SQLAlchemyError as exc:
            db.session.rollback()
            if user_id is None:
                raise
            log.warning("jobs of user %s listed from Redis alone: the database is unavailable (%s)", user_id, exc)
        jobs = [job for job in self.recent(user_id, limit=self.store.keep_per_user)
                if (not job_type or job.job_type == job_type) and (not session_id or job.session_id == session_id)
                and (not status or job.status.value == status)]
        return [self._with_ack(job) for job in jobs[:limit]]

    def _list_rows(self, user_id: str | None, *, limit: int, status: str | None, job_type: str | None,
                   session_id: str | None, recorded: bool) -> list[Job]:
        rows = self.records.rows(user_id, limit=limit, status=status, job_type=job_type, session_id=session_id)
        live = self.store.load_many(row.id for row in rows)
        jobs = []
        for row in rows:
            job = live.get(row.id) or row.to_job()
            job.extra["acknowledged"] = row.acknowledged_at is not None
            if recorded:
                job.extra["recorded_status"] = row.status
            if status and job.status.value != status:
                continue
            jobs.append(job)
        return jobs

    def list_etag(self, user_id: str, query: str) -> str:
        """A validator for the user's list that costs one Redis GET and no database query."""
        version = self.store.user_version(user_id)
        digest = hashlib.sha1(query.encode()).hexdigest()[:10]
        return f'W/"{version}-{digest}"'

    def recent(self, user_id: str, limit: int = 20) -> list[Job]:
        """The user's recent jobs from Redis alone (the event stream's snapshot)."""
        ids = self.store.recent_ids(user_id, limit)
        live = self.store.load_many(ids)
        return [live[job_id] for job_id in ids if job_id in live]

    def _with_ack(self, job: Job) -> Job:
        job.extra.setdefault("acknowledged", False)
        return job

    # -- acting --------------------------------------------------------------------------------
    def cancel(self, job_id: str, user_id: str) -> Job:
        """Ask the job to stop; its runner ends it as cancelled at its next check (within a second)."""
        job = self.get(job_id, user_id)
        if job.is_terminal:
            raise Conflict(f"This job has already {_finished_word(job.status)}.", code="already_finished")
        self.store.request_cancel(job_id)
        log.info("job %s: cancel requested", job_id, extra=job_fields(job))
        job.cancel_requested = True
        if job_id not in self.runner.running:
            # No runner here: if none anywhere (its heartbeat lapsed), end it now.
            orphan = end_orphan(self.store, job_id, JobStatus.CANCELLED, error_code=None, error=None,
                                fallback=job)  # the job as read above, should Redis have lost its hash
            if orphan is not None:
                self.records.record_terminal(orphan)
                return orphan
        return job

    def acknowledge(self, job_id: str, user_id: str) -> bool:
        """Mark that the user was told this job finished; True only for the first caller."""
        self.get(job_id, user_id)
        first = self.records.acknowledge(job_id)
        if first:
            self.store.bump_version(str(user_id))
        return first

    def active_for_session(self, user_id: str, session_id: str) -> list[Job]:
        return [job for job in self.jobs(user_id, limit=50, session_id=session_id) if not job.is_terminal]

    def retried_by(self, job_id: str, user_id: str) -> Job | None:
        """The newest job started as a retry of ``job_id`` (the user's own), if any."""
        retry_id = self.records.retried_by(job_id, user_id)
        return self.get(retry_id, user_id) if retry_id else None

    # -- what the event streams and the poll fallback read -------------------------------------------
    def job_channel(self, job_id: str) -> str:
        return self.store.job_channel(job_id)

    def user_channel(self, user_id: str) -> str:
        return self.store.user_channel(user_id)

    def changed_since(self, user_id: str, since: int, limit: int) -> list[Job]:
        """The jobs of the user's recent window written after version ``since``, from Redis alone.

        A job's seq is the millisecond clock of its last write (``next_seq``), so "changed since V" is
        "seq > V": two round trips when nothing changed, and no database statement.
        """
        seqs = self.store.seqs(self.store.recent_ids(user_id, limit))
        changed = [job_id for job_id, seq in seqs.items() if seq > since]
        live = self.store.load_many(changed)
        return [live[job_id] for job_id in changed if job_id in live]

    # -- this process -------------------------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        """Whether this process takes new jobs (False once it began stopping)."""
        return self.runner.accepting

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the jobs this process runs to end; True when none runs."""
        return self.runner.wait(timeout)

    def stop(self, grace: float) -> list[str]:
        """Stop taking jobs; running ones get ``grace`` seconds, the rest are handed over or interrupted."""
        return self.runner.shutdown(grace)

    # -- what operators look at and act on (``flask jobs``, ``/metrics``) ------------------------------
    def live_state(self, job_id: str) -> Job | None:
        """The job as Redis holds it now (any user's), or None."""
        return self.store.load(job_id)

    def inspect(self, job_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Everything Redis holds about the job (``JobStore.inspect``) and its row as a dict (or None)."""
        row = self.records.row(job_id)
        columns = None if row is None else {column.name: getattr(row, column.name)
                                            for column in row.__table__.columns}
        return self.store.inspect(job_id), columns

    def owner(self, job_id: str) -> str | None:
        """The user whose job this is, from Redis or the database; None for an unknown job."""
        job = self.store.load(job_id)
        if job is not None:
            return job.user_id
        row = self.records.row(job_id)
        return row.user_id if row is not None else None

    def queue_stats(self) -> dict[str, Any]:
        """Jobs in the active set, those overdue, the outbox, the dead letters; the key prefix."""
        queues = self.store.queue_stats()
        queues["dead_letters"] = self.store.dead_letter_count()
        queues["prefix"] = self.store.prefix
        queues["active_key"] = self.store.active_key
        return queues

    def counts(self) -> list[tuple[str, str, int]]:
        """``(job type, status, rows)`` of the whole ``background_jobs`` table."""
        return self.records.counts()

    def upkeep_round(self, *, resume: bool = True) -> dict[str, Any]:
        """One upkeep round now, here: reconcile, adopt, reap (``resume``: resume what may be), flush."""
        upkeep = self.upkeep
        return {"reconciled": upkeep.reconcile_lost_data(), "adopted": upkeep.adopt_orphans(),
                "reaped": upkeep.reap(resume=resume), "flushed": self.records.flush_outbox(limit=10_000)}

    def flush_outbox(self, limit: int = 10_000) -> tuple[int, int]:
        """Write what waits in the outbox now: (written, still waiting)."""
        return self.records.flush_outbox(limit), self.store.outbox_depth()

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        return self.store.dead_letters()

    def requeue_dead_letter(self, job_id: str) -> None:
        self.records.requeue_dead_letter(job_id)

    def purge(self, cutoff: datetime, *, dry_run: bool) -> dict[str, Any]:
        """Delete finished jobs that ended before ``cutoff``: their rows and their Redis keys.

        Returns ``{"rows", "redis_hashes", "by_status", "job_ids"}``. A row whose job Redis still shows
        as active is left alone; active rows are never touched.
        """
        rows = deleted = 0
        by_status: dict[str, int] = {}
        ids: list[str] = []
        for batch in self.records.finished_before(cutoff):
            live = self.store.load_many(job_id for job_id, _, _ in batch)
            batch = [entry for entry in batch if entry[0] not in live or live[entry[0]].is_terminal]
            for _, _, status in batch:
                by_status[status] = by_status.get(status, 0) + 1
            rows += len(batch)
            ids.extend(job_id for job_id, _, _ in batch)
            if not dry_run:
                self.records.delete_finished([job_id for job_id, _, _ in batch])
                deleted += self.store.purge((job_id, user_id) for job_id, user_id, _ in batch)
        return {"rows": rows, "redis_hashes": deleted, "by_status": by_status, "job_ids": ids}


def _finished_word(status: JobStatus) -> str:
    return {"completed": "completed", "failed": "failed", "cancelled": "been cancelled"}[status.value]
