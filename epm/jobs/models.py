"""BackgroundJob: the durable record of a job, table ``background_jobs``.

A row is inserted when the job is created and completed when it reaches a terminal state;
progress updates never touch it (they live in Redis).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .job import Job, JobStatus, iso, parse_iso


class BackgroundJob(db.Model):
    __tablename__ = "background_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_type: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    retry_of: Mapped[str | None] = mapped_column(String(32))
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
        self.progress_message = job.message
        self.result_data = job.result
        self.error_code = job.error_code
        self.error_message = job.error
        self.session_id = job.session_id
        self.user_id = job.user_id
        self.retry_of = job.retry_of
        self.created_at = parse_iso(job.created_at) or datetime.now(UTC)
        self.started_at = parse_iso(job.started_at)
        self.completed_at = parse_iso(job.completed_at)

    def to_job(self) -> Job:
        job = Job(
            id=self.id, job_type=self.job_type, user_id=self.user_id, title=self.title or "",
            status=JobStatus(self.status), progress=self.progress or 0, message=self.progress_message or "",
            session_id=self.session_id, created_at=iso(self.created_at), started_at=iso(self.started_at),
            updated_at=iso(self.completed_at or self.started_at or self.created_at),
            completed_at=iso(self.completed_at), error_code=self.error_code, error=self.error_message,
            result=self.result_data, retry_of=self.retry_of,
        )
        # A row's seq is the time of its last state, which is not older than any seq written for it.
        job.seq = int((self.completed_at or self.started_at or self.created_at).timestamp() * 1000)
        job.extra["acknowledged"] = self.acknowledged_at is not None
        return job
