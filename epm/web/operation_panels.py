"""What the session page shows for each operation: its running job, its last failure, its latest result."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import url_for
from sqlalchemy import select

from ..extensions import db
from ..jobs import current_jobs
from ..jobs.job import Job, JobStatus
from ..jobs.registry import Operation, get_operation
from ..models import Analysis, Program, StrategySession

# The session page lists the operations in the order a team would run them; their labels are their own
# (``@operation(heading=..., start_label=..., view_label=...)``).
PANELS: tuple[str, ...] = ("web_research", "bmc_analysis", "epm_generation")


@dataclass(frozen=True)
class Fix:
    """What to do about a failure whose cause is in the session: where to go, and whether Retry can help."""

    label: str
    field: str
    retry_helps: bool

    def url(self, session_id: str | int) -> str:
        return url_for("sessions.edit", session_id=session_id) + f"#{self.field}"


# Failures a plain retry would repeat (no sources) or may well repeat (none could be read).
FIXES: dict[str, Fix] = {"no_sources": Fix("Edit sources", "source_urls", retry_helps=False),
                         "no_source_read": Fix("Edit sources", "source_urls", retry_helps=True)}
# Why an operation cannot start, by the session field it ``needs`` (``@operation(needs=...)``).
NEEDS: dict[str, str] = {"source_urls": "Add at least one source URL first: research reads the sites you list.",
                         "objectives": "Add at least one objective first.",
                         "business": "Describe the business first."}


def fix_for(job: Job | None) -> Fix | None:
    return FIXES.get(job.error_code or "") if job is not None and job.session_id else None


def missing_field(operation: str, session: StrategySession) -> str | None:
    """The first session field ``operation`` needs that is empty (so it cannot succeed), or None."""
    return next((field for field in get_operation(operation).needs if not getattr(session, field, None)), None)


def blocked_reason(operation: str, session: StrategySession) -> str | None:
    """Why ``operation`` cannot succeed for ``session`` as it stands, in words, or None."""
    field = missing_field(operation, session)
    return NEEDS.get(field, f"Fill in {field.replace('_', ' ')} first.") if field else None


@dataclass
class Panel:
    operation: str
    op: Operation
    active: Job | None
    failed: Job | None
    result_url: str | None
    result_at: datetime | None
    blocked: str | None = None
    blocked_field: str | None = None

    @property
    def fix(self) -> Fix | None:
        return fix_for(self.failed)


def operation_panels(session: StrategySession, user_id: str) -> list[Panel]:
    """One panel per operation: the active job (if any), the latest job if it failed, the latest result."""
    jobs = current_jobs().jobs(user_id, limit=50, session_id=str(session.id))
    results = _latest_results(session)
    panels = []
    for name in PANELS:
        op = get_operation(name)
        mine = [job for job in jobs if job.job_type == name]
        active = next((job for job in mine if not job.is_terminal), None)
        latest = mine[0] if mine else None
        failed = latest if latest is not None and latest.status == JobStatus.FAILED else None
        url, at = results.get(name, (None, None))
        panels.append(Panel(name, op, active, failed, url, at, blocked_reason(name, session),
                            missing_field(name, session)))
    return panels


def _latest_results(session: StrategySession) -> dict[str, tuple[str, datetime]]:
    found: dict[str, tuple[str, Any]] = {}
    program = db.session.scalar(select(Program).where(Program.session_id == session.id,
                                                      Program.user_id == session.user_id)
                                .order_by(Program.created_at.desc(), Program.id.desc()).limit(1))
    if program is not None:
        found["epm_generation"] = (url_for("programs.show", program_id=program.id), program.created_at)
    for kind, operation, endpoint in (("research", "web_research", "analyses.research"),
                                      ("bmc", "bmc_analysis", "analyses.canvas")):
        analysis = db.session.scalar(select(Analysis).where(Analysis.session_id == session.id,
                                                            Analysis.user_id == session.user_id,
                                                            Analysis.kind == kind)
                                     .order_by(Analysis.created_at.desc(), Analysis.id.desc()).limit(1))
        if analysis is not None:
            found[operation] = (url_for(endpoint, session_id=session.id), analysis.created_at)
    return found
