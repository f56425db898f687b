"""BackgroundJob: the durable record of a job, table ``background_jobs``.

Its columns have the names of the Redis hash fields and of the API's JSON (``message``, ``error``,
``result``, ...): one name per concept.

A row is inserted when the job is created and completed when it reaches a terminal state;
progress updates never touch it (they live in Redis).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ..extensions import db
from .job import Job, JobStatus, iso, parse_iso

# NUL, which PostgreSQL text cannot hold, and UTF-16 surrogates, which no UTF-8 encoder writes.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(value: str) -> str:
    """``value`` without what PostgreSQL cannot store: NUL removed, a lone surrogate replaced by U+FFFD.

    An error message quoting a URL with a NUL in it must not make its job's terminal row unwritable.
    """
    if not _UNSTORABLE.search(value):
        return value
    return _UNSTORABLE.sub(lambda match: "" if match.group() == "\x00" else "\ufffd", value)


def clean_value(value: Any) -> Any:
    """``clean_text`` applied to every string (keys included) in a JSON-able value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(key): clean_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(item) for item in value]
    return value


class CleanJSON(TypeDecorator):
    """JSON whose strings are cleaned before they are stored (JSON escapes would carry NUL through)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return clean_value(value)


@event.listens_for(Engine, "before_cursor_execute", retval=True)
def _clean_parameters(_conn, _cursor, statement, parameters, _context, executemany):
    """Clean every text parameter of every statement, whatever model or path it came from.

    Forms and the API refuse such characters, but text also arrives from operations and fetched pages;
    one unstorable character in a terminal state used to jam the outbox for every job behind it.
    """
    if executemany and isinstance(parameters, list | tuple):
        return statement, [_clean_row(row) for row in parameters]
    return statement, _clean_row(parameters)


def _clean_row(row: Any) -> Any:
    if isinstance(row, dict):
        return {key: clean_text(value) if isinstance(value, str) else value for key, value in row.items()}
    if isinstance(row, list | tuple):
        return type(row)(clean_text(value) if isinstance(value, str) else value for value in row)
    return row


class BackgroundJob(db.Model):
    __tablename__ = "background_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_type: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any] | None] = mapped_column(CleanJSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(CleanJSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    retry_of: Mapped[str | None] = mapped_column(String(32))
    # Which run of the job the row records (1, or more once resumed), and the earlier runs, oldest first.
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(CleanJSON)
    # The finished job's step timeline (epm/jobs/steps.py): each declared step with its start and end.
    timeline: Mapped[dict[str, Any] | None] = mapped_column(CleanJSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set once when the user has been told that the job finished (see POST .../acknowledge).
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_background_jobs_user_created", "user_id", "created_at"),)

    @classmethod
    def from_job(cls, job: Job, params: dict[str, Any] | None) -> BackgroundJob:
        row = cls(id=job.id, params=params)
        row.apply(job)
        return row

    def apply(self, job: Job) -> None:
        """Copy the state of ``job`` onto this row."""
        self.job_type = job.job_type
        self.title = job.title
        self.status = job.status.value
        self.progress = job.progress
        self.message = job.message
        self.result = job.result
        self.error_code = job.error_code
        self.error = job.error
        self.session_id = job.session_id
        self.user_id = job.user_id
        self.retry_of = job.retry_of
        self.attempt = job.attempt or 1
        self.attempts = list(job.attempts) if job.attempts else None
        self.timeline = job.timeline
        self.created_at = parse_iso(job.created_at) or datetime.now(UTC)
        self.started_at = parse_iso(job.started_at)
        self.completed_at = parse_iso(job.completed_at)

    def to_job(self) -> Job:
        job = Job(
            id=self.id, job_type=self.job_type, user_id=self.user_id, title=self.title or "",
            status=JobStatus(self.status), progress=self.progress or 0, message=self.message or "",
            session_id=self.session_id, created_at=iso(self.created_at), started_at=iso(self.started_at),
            updated_at=iso(self.completed_at or self.started_at or self.created_at),
            completed_at=iso(self.completed_at), error_code=self.error_code, error=self.error,
            result=self.result, retry_of=self.retry_of, attempt=self.attempt or 1,
            attempts=list(self.attempts) if self.attempts else None, timeline=self.timeline,
        )
        # A row's seq is the time of its last state, which is not older than any seq written for it.
        job.seq = int((self.completed_at or self.started_at or self.created_at).timestamp() * 1000)
        job.extra["acknowledged"] = self.acknowledged_at is not None
        return job
