"""Records: the durable record of jobs, table ``background_jobs``, and the outbox of what it still lacks.

A row is written twice per job: when it is created and when it reaches a terminal state
(``record_terminal``, the one way a terminal state reaches the database, from the runner, the reaper
and cancel alike). A terminal state the database cannot take goes to the outbox in Redis and is
written later, exactly once (the row is keyed by job id). Every query of ``background_jobs`` is here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from .. import signals
from ..errors import BackendDown, is_outage
from ..extensions import db
from ..logs import job_fields
from .job import Job, JobStatus, next_seq
from .models import BackgroundJob
from .store import Guard

if TYPE_CHECKING:
    from flask import Flask

    from .store import JobStore

log = logging.getLogger("epm.jobs")

ACTIVE_STATUSES = (JobStatus.PENDING.value, JobStatus.RUNNING.value)


class Records:
    """Reads and writes ``background_jobs``; owns the outbox and its dead letters."""

    def __init__(self, app: Flask, store: JobStore):
        self.app = app
        self.store = store

    # -- a job's two writes ------------------------------------------------------------------------
    def create(self, job: Job, params: dict[str, Any]) -> None:
        """Insert the row of a job being started; ``BackendDown`` (nothing written) when the database is down."""
        try:
            db.session.add(BackgroundJob.from_job(job, params))
            db.session.commit()
        except SQLAlchemyError as exc:
            db.session.rollback()
            signals.backend_error.send(exc, backend="database")
            log.error("job %s not started: the database is unavailable (%s)", job.id, exc, extra=job_fields(job))
            raise BackendDown("The database is unavailable, so the job was not started. "
                              "Try again in a minute.", code="database_unavailable") from exc

    def forget(self, job: Job) -> None:
        """Remove the row of a start that could not reach Redis, as if it never began."""
        try:
            db.session.execute(delete(BackgroundJob).where(BackgroundJob.id == job.id))
            db.session.commit()
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("job %s: could not remove the row of a start that failed (%s); the reaper will "
                        "end it", job.id, exc, extra=job_fields(job))

    def record_terminal(self, job: Job) -> bool:
        """Write a terminal state to the database, exactly once; on failure put it in the outbox.

        The first terminal state recorded for a job is final: writing the same one again changes
        nothing, so the outbox may be flushed twice. Should the row hold a different one (a runner cut
        off from Redis finished a job that a reaper had meanwhile ended), the durable record wins and
        is put back into Redis. True when the database has the job's terminal state.
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
            self._put_back(job, recorded)
        self._after_recorded(job)
        return True

    def _put_back(self, job: Job, recorded: Job) -> None:
        log.warning("job %s: already recorded as %s (%s); %s (%s) is not written", job.id, recorded.status.value,
                    recorded.error_code, job.status.value, job.error_code, extra=job_fields(job))
        recorded.seq = next_seq(max(job.seq, recorded.seq))
        try:
            self.store.write(recorded, Guard.RECORD)
        except Exception as exc:
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

    def flush_outbox(self, limit: int = 100) -> int:
        """Write terminal states waiting in the outbox; return how many were written.

        An entry the database refuses while it answers is refused for its data: it moves to the dead
        letters with the database's reason (``flask jobs dead-letters``) and the round goes on with the
        next. When the database does not answer at all, the round stops: the rest wait for the next.
        """
        written = 0
        for job_id in self.store.outbox_ids(limit):
            job = self.store.load(job_id)
            if job is None or not job.is_terminal:
                self.store.outbox_remove(job_id)
                continue
            if not self.record_terminal(job):
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
            log.info("outbox: job %s written to the database", job_id, extra=job_fields(job))
            written += 1
        return written

    def requeue_dead_letter(self, job_id: str) -> None:
        """Put a dead letter back in the outbox (after its cause was fixed)."""
        self.store.outbox_add(job_id)
        self.store.dead_letter_remove(job_id)

    # -- reading -----------------------------------------------------------------------------------
    def row(self, job_id: str) -> BackgroundJob | None:
        return db.session.get(BackgroundJob, job_id)

    def params(self, job_id: str) -> dict[str, Any]:
        """The parameters the job was started with ({} when its row is gone)."""
        row = self.row(job_id)
        return (row.params if row is not None else None) or {}

    def rows(self, user_id: str | None = None, *, limit: int, status: str | None = None,
             job_type: str | None = None, session_id: str | None = None) -> list[BackgroundJob]:
        """Rows newest first, filtered by what the row may say: a job's row says pending until its end is
        recorded (later, from the outbox, if the database was down), so a status matches the active rows
        too; the caller lays Redis's live state over them and filters again."""
        query = select(BackgroundJob)
        if user_id is not None:
            query = query.where(BackgroundJob.user_id == str(user_id))
        if job_type:
            query = query.where(BackgroundJob.job_type == job_type)
        if session_id:
            query = query.where(BackgroundJob.session_id == session_id)
        if status:
            query = query.where(BackgroundJob.status.in_({status, *ACTIVE_STATUSES}))
        return list(db.session.scalars(query.order_by(BackgroundJob.created_at.desc()).limit(limit)).all())

    def retried_by(self, job_id: str, user_id: str) -> str | None:
        """The id of the newest job started as a retry of ``job_id``, if any."""
        return db.session.scalar(select(BackgroundJob.id)
                                 .where(BackgroundJob.retry_of == job_id, BackgroundJob.user_id == str(user_id))
                                 .order_by(BackgroundJob.created_at.desc()).limit(1))

    def acknowledge(self, job_id: str) -> bool:
        """Mark the job's end as told to its user; True only for the first caller."""
        result = db.session.execute(
            update(BackgroundJob)
            .where(BackgroundJob.id == job_id, BackgroundJob.acknowledged_at.is_(None))
            .values(acknowledged_at=datetime.now(UTC)))
        db.session.commit()
        return result.rowcount == 1

    def active_since_before(self, cutoff: datetime) -> list[BackgroundJob]:
        """Rows still active that were created before ``cutoff`` (candidates for adoption)."""
        return list(db.session.scalars(
            select(BackgroundJob).where(BackgroundJob.status.in_(ACTIVE_STATUSES),
                                        BackgroundJob.created_at < cutoff)).all())

    def finished_since(self, since: datetime, limit: int) -> list[Job]:
        """Jobs that ended after ``since``, newest first (to put back into a Redis that lost them)."""
        rows = db.session.scalars(
            select(BackgroundJob).where(BackgroundJob.status.not_in(ACTIVE_STATUSES),
                                        BackgroundJob.completed_at >= since)
            .order_by(BackgroundJob.completed_at.desc()).limit(limit)).all()
        return [row.to_job() for row in rows]

    def counts(self) -> list[tuple[str, str, int]]:
        """``(job type, status, rows)`` over the whole table."""
        return [tuple(entry) for entry in db.session.execute(
            select(BackgroundJob.job_type, BackgroundJob.status, func.count())
            .group_by(BackgroundJob.job_type, BackgroundJob.status)).all()]

    # -- purging -----------------------------------------------------------------------------------
    def finished_before(self, cutoff: datetime, batch: int = 500) -> Iterator[list[tuple[str, str, str]]]:
        """Batches of ``(id, user_id, status)`` of finished rows that ended before ``cutoff``, by id."""
        ended = func.coalesce(BackgroundJob.completed_at, BackgroundJob.created_at)
        after = ""
        while True:
            found = db.session.execute(
                select(BackgroundJob.id, BackgroundJob.user_id, BackgroundJob.status)
                .where(BackgroundJob.status.not_in(ACTIVE_STATUSES), ended < cutoff, BackgroundJob.id > after)
                .order_by(BackgroundJob.id).limit(batch)).all()
            if not found:
                return
            after = found[-1][0]
            yield [tuple(entry) for entry in found]

    def delete_finished(self, job_ids: list[str]) -> None:
        """Delete these rows if they are finished (an active row is never deleted)."""
        db.session.execute(delete(BackgroundJob).where(BackgroundJob.id.in_(job_ids),
                                                       BackgroundJob.status.not_in(ACTIVE_STATUSES)))
        db.session.commit()
