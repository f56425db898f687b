"""JobService: starting, reading, cancelling and retrying jobs, and keeping PostgreSQL in step.

Live state comes from Redis (JobStore); the durable record is the ``background_jobs`` row, written
twice per job: when it is created and when it reaches a terminal state. A terminal state that cannot
be written goes to the outbox and is written later, exactly once (the row is keyed by job id).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..errors import BackendDown, Conflict, JobNotFound, NotFound, TooManyRunning
from ..extensions import db
from ..logs import job_fields
from . import signals
from .job import RESUMED_MESSAGE, Job, JobStatus, iso, next_seq, utcnow
from .models import BackgroundJob
from .registry import get_operation
from .runner import Runner

if TYPE_CHECKING:
    from flask import Flask

    from .store import JobStore

log = logging.getLogger("epm.jobs")

ACTIVE_STATUSES = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
INTERRUPTED_MESSAGE = "The server running this job stopped before it finished. Retry it to run it again."


class JobService:
    """The one way the rest of the app acts on jobs."""

    def __init__(self, app: Flask, store: JobStore):
        self.app = app
        self.store = store
        self.runner = Runner(app, store, on_terminal=self.record_terminal)

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
            db.session.add(BackgroundJob.from_job(job, params or {}))
            db.session.commit()
        except SQLAlchemyError as exc:
            db.session.rollback()
            self.store.release_lock(job)
            self.store.leave(job)
            signals.backend_error.send(exc, backend="database")
            log.error("job %s not started: the database is unavailable (%s)", job.id, exc, extra=job_fields(job))
            raise BackendDown("The database is unavailable, so the job was not started. "
                              "Try again in a minute.", code="database_unavailable") from exc
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
        try:
            db.session.execute(delete(BackgroundJob).where(BackgroundJob.id == job.id))
            db.session.commit()
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("job %s: could not remove the row of a start that failed (%s); the reaper will "
                        "end it", job.id, exc, extra=job_fields(job))
        # Redis is what failed; if the lock stays, the next start finds it stale (its holder has no state).
        with suppress(redis.RedisError):
            self.store.release_lock(job)
        with suppress(redis.RedisError):
            self.store.leave(job)

    def _take_lock(self, job: Job) -> None:
        from ..errors import DuplicateJob

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
        row = db.session.get(BackgroundJob, job_id)
        params = (row.params if row is not None else None) or {}
        return self.start(old.job_type, user_id=user_id, session_id=old.session_id, params=params,
                          retry_of=old.id)

    # -- reading -------------------------------------------------------------------------------
    def get(self, job_id: str, user_id: str) -> Job:
        """The job's newest state; ``JobNotFound`` for another user's job, never revealing it exists."""
        job = self.store.load(job_id)
        row = None
        if job is None or job.is_terminal:
            try:
                row = db.session.get(BackgroundJob, job_id)
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

    def list(self, user_id: str, *, limit: int = 20, status: str | None = None, job_type: str | None = None,
             session_id: str | None = None) -> list[Job]:
        """The user's jobs, newest first: database rows with the live state from Redis laid over them.

        While the database is down the recent jobs Redis holds answer instead (filtered the same way),
        so the live view keeps working through the outage.
        """
        try:
            return self._list_rows(user_id, limit=limit, status=status, job_type=job_type, session_id=session_id)
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("jobs of user %s listed from Redis alone: the database is unavailable (%s)", user_id, exc)
        jobs = [job for job in self.recent(user_id, limit=self.store.keep_per_user)
                if (not job_type or job.job_type == job_type) and (not session_id or job.session_id == session_id)
                and (not status or job.status.value == status)]
        return [self._with_ack(job) for job in jobs[:limit]]

    def _list_rows(self, user_id: str, *, limit: int, status: str | None, job_type: str | None,
                   session_id: str | None) -> list[Job]:
        query = select(BackgroundJob).where(BackgroundJob.user_id == str(user_id))
        if job_type:
            query = query.where(BackgroundJob.job_type == job_type)
        if session_id:
            query = query.where(BackgroundJob.session_id == session_id)
        if status in ACTIVE_STATUSES:
            # A live job's row says pending until it ends; Redis knows whether it runs.
            query = query.where(BackgroundJob.status.in_(ACTIVE_STATUSES))
        elif status:
            query = query.where(BackgroundJob.status == status)
        rows = db.session.scalars(query.order_by(BackgroundJob.created_at.desc()).limit(limit)).all()
        live = self.store.load_many(row.id for row in rows)
        jobs = []
        for row in rows:
            job = live.get(row.id) or row.to_job()
            job.extra["acknowledged"] = row.acknowledged_at is not None
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
            orphan = self.store.finish_orphan(job_id, JobStatus.CANCELLED, error_code=None, error=None)
            if orphan is not None:
                self.record_terminal(orphan)
                return orphan
        return job

    def acknowledge(self, job_id: str, user_id: str) -> bool:
        """Mark that the user was told this job finished; True only for the first caller."""
        self.get(job_id, user_id)
        result = db.session.execute(
            update(BackgroundJob)
            .where(BackgroundJob.id == job_id, BackgroundJob.acknowledged_at.is_(None))
            .values(acknowledged_at=datetime.now(UTC)))
        db.session.commit()
        first = result.rowcount == 1
        if first:
            self.store.bump_version(str(user_id))
        return first

    # -- the durable record --------------------------------------------------------------------
    def record_terminal(self, job: Job) -> bool:
        """Write a terminal state to PostgreSQL, exactly once; on failure put it in the outbox.

        The first terminal state recorded for a job is final: writing the same one again changes
        nothing, so the outbox may be flushed twice. Should the row hold a different one (a runner cut
        off from Redis finished a job that a reaper had meanwhile ended), the durable record wins and
        is put back into Redis.
        """
        recorded = None
        try:
            with self.app.app_context():
                row = db.session.get(BackgroundJob, job.id, with_for_update=True)
                if row is None:
                    db.session.add(BackgroundJob.from_job(job, None))
                elif row.status in ACTIVE_STATUSES:
                    row.apply(job)
                elif (row.status, row.error_code) != (job.status.value, job.error_code):
                    recorded = row.to_job()
                db.session.commit()
        except SQLAlchemyError as exc:
            db.session.rollback()
            signals.backend_error.send(exc, backend="database")
            log.warning("job %s: terminal state not written to the database (%s); queued in the outbox",
                        job.id, exc, extra=job_fields(job))
            self._outbox_add(job.id)
            return False
        if recorded is not None:
            self._restore_recorded(job, recorded)
        self._after_recorded(job)
        return True

    def _restore_recorded(self, job: Job, recorded: Job) -> None:
        log.warning("job %s: already recorded as %s (%s); %s (%s) is not written", job.id, recorded.status.value,
                    recorded.error_code, job.status.value, job.error_code, extra=job_fields(job))
        recorded.seq = next_seq(max(job.seq, recorded.seq))
        try:
            self.store.save(recorded)
        except redis.RedisError as exc:
            log.warning("job %s: could not put the recorded state back into Redis (%s)", job.id, exc,
                        extra=job_fields(job))

    def _outbox_add(self, job_id: str) -> None:
        try:
            self.store.outbox_add(job_id)
        except Exception:
            log.exception("job %s: neither the database nor Redis took its terminal state", job_id,
                          extra={"job_id": job_id})

    def _after_recorded(self, job: Job) -> None:
        try:
            self.store.release_lock(job)
            self.store.expire(job.id)
            self.store.outbox_remove(job.id)
        except Exception as exc:
            log.warning("job %s: recorded, but Redis housekeeping failed (%s)", job.id, exc, extra=job_fields(job))

    # -- maintenance ---------------------------------------------------------------------------
    def flush_outbox(self, limit: int = 100) -> int:
        """Write terminal states waiting in the outbox; return how many were written.

        An entry the database refuses while it answers is refused for its data: it moves to the dead
        letters with the database's reason (``flask jobs dead-letters``) and the round goes on with the
        next. When the database does not answer at all, the round stops: the rest wait for the next.
        """
        from sqlalchemy import text

        from ..errors import is_outage

        written = 0
        for job_id in self.store.outbox_ids(limit):
            job = self.store.load(job_id)
            if job is None or not job.is_terminal:
                self.store.outbox_remove(job_id)
                continue
            if self.record_terminal(job):
                log.info("outbox: job %s written to the database", job_id, extra=job_fields(job))
                written += 1
                continue
            # Ask again, keeping the error this time: is the database away, or does it refuse this row?
            with self.app.app_context():
                try:
                    db.session.execute(text("SELECT 1"))
                    db.session.merge(BackgroundJob.from_job(job, None))
                    db.session.flush()
                except SQLAlchemyError as exc:
                    if is_outage(exc):
                        break
                    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                    self.store.dead_letter(job_id, reason)
                    log.error("outbox: job %s moved to the dead letters: the database refuses it (%s)",
                              job_id, reason, extra=job_fields(job))
                    continue
                finally:
                    db.session.rollback()
            # It went through on the second try (the database came back meanwhile): write it for real.
            if not self.record_terminal(job):
                break
            written += 1
        return written

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
                row = db.session.get(BackgroundJob, job_id)
            except SQLAlchemyError as exc:
                db.session.rollback()
                log.warning("reaper: job %s left for later: its hash is gone and the database is "
                            "unavailable (%s)", job_id, exc, extra={"job_id": job_id})
                return None
            job = fallback = row.to_job() if row is not None else None
        if resume and job is not None and not job.is_terminal and not job.cancel_requested:
            resumed = self._resume(job, fallback)
            if resumed is not False:
                return resumed
        cancelled = job is not None and job.cancel_requested
        job = self.store.finish_orphan(job_id, JobStatus.CANCELLED if cancelled else JobStatus.FAILED,
                                       error_code=None if cancelled else "interrupted",
                                       error=None if cancelled else INTERRUPTED_MESSAGE, fallback=fallback)
        if job is None:
            return None
        log.warning("reaper: job %s %s (no heartbeat)", job_id, job.status.value if cancelled else "interrupted",
                    extra=job_fields(job))
        signals.job_reaped.send(job)
        self.record_terminal(job)
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
                row = db.session.get(BackgroundJob, job.id)
            except SQLAlchemyError as exc:
                db.session.rollback()
                log.warning("reaper: job %s left for later: its parameters are only in the database, which is "
                            "unavailable (%s)", job.id, exc, extra=job_fields(job))
                return None
            params = (row.params if row is not None else None) or {}
        checkpoints = self.store.checkpoints(job.id) if fallback is None else {}
        claimed = self.store.orphan_write(job.id, _next_attempt, fallback=fallback)
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
        rows = db.session.scalars(
            select(BackgroundJob).where(BackgroundJob.status.in_(ACTIVE_STATUSES),
                                        BackgroundJob.created_at < datetime.now(UTC) - grace)).all()
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
                self._outbox_add(row.id)
                continue
            self.store.watch(row.id)
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
            rows = db.session.scalars(
                select(BackgroundJob).where(BackgroundJob.status.not_in(ACTIVE_STATUSES),
                                            BackgroundJob.completed_at >= since)
                .order_by(BackgroundJob.completed_at.desc()).limit(limit)).all()
            restored = self.store.restore(row.to_job() for row in rows)
        except (SQLAlchemyError, redis.RedisError):
            db.session.rollback()
            self.store.forget_marker()
            raise
        if restored:
            log.warning("%d finished job(s) missing from Redis (restarted without its data, flushed, or new) "
                        "restored from the database", restored)
        return restored

    def active_for_session(self, user_id: str, session_id: str) -> list[Job]:
        return [job for job in self.list(user_id, limit=50, session_id=session_id) if not job.is_terminal]


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


def _finished_word(status: JobStatus) -> str:
    return {"completed": "completed", "failed": "failed", "cancelled": "been cancelled"}[status.value]
