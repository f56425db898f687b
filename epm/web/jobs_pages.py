"""The jobs dashboard: every job of the user, filterable, with Cancel and Retry; one job's page.

Server-rendered so it works without JS; ``static/js/dashboard.js`` keeps it live.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_required

from ..errors import EpmError, JobNotFound
from ..jobs import current_jobs, steps
from ..jobs.job import Job, JobStatus, parse_iso, time_left
from ..jobs.registry import all_operations, get_operation
from .auth import signed_in_user_id as _uid
from .home import session_names as user_session_names
from .operation_panels import fix_for

bp = Blueprint("jobs_pages", __name__)

LIMIT = 100


@bp.app_template_filter("ago")
def ago(value: str | datetime | None, now: datetime | None = None) -> str:
    """"2 minutes ago" for an ISO time or a datetime (naive ones are UTC), "" for none."""
    when = parse_iso(value) if isinstance(value, str) else value
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return "just now"
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if seconds >= size * 0.75:
            count = max(1, round(seconds / size))
            label = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {label}" if future else f"{label} ago"
    return "just now"


def _as_utc(value: str | datetime | None) -> datetime | None:
    when = parse_iso(value) if isinstance(value, str) else value
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


@bp.app_template_filter("exact_time")
def exact_time(value: str | datetime | None) -> str:
    """The one exact format on every page (time.js writes the same): "2026-12-01 00:29 UTC"."""
    when = _as_utc(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if when else ""


@bp.app_template_filter("iso_time")
def iso_time(value: str | datetime | None) -> str:
    """A ``<time datetime>`` value: ISO-8601 in UTC with a Z."""
    when = _as_utc(value)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""


@bp.get("/jobs")
@login_required
def index():
    operations = {op.name: op.title for op in all_operations()}
    status = request.args.get("status") or None
    job_type = request.args.get("job_type") or None
    problems = []
    if status and status not in {s.value for s in JobStatus}:
        problems.append(f"There is no status “{status}”: choose one from the list.")
        status = None
    if job_type and job_type not in operations:
        problems.append(f"There is no job type “{job_type}”: choose one from the list.")
        job_type = None
    listed = current_jobs().jobs(_uid(), limit=LIMIT, status=status, job_type=job_type)
    running = [job for job in listed if not job.is_terminal]
    finished = [job for job in listed if job.is_terminal]
    return render_template("jobs/index.html", running=running, finished=finished, operations=operations,
                           statuses=[s.value for s in JobStatus], status=status, job_type=job_type,
                           problems=problems, session_names=session_names(listed),
                           fix_for=fix_for), 400 if problems else 200


@bp.get("/jobs/<job_id>")
@login_required
def show(job_id: str):
    service = current_jobs()
    user_id = _uid()
    job = service.get(job_id, user_id)
    retried_as = service.retried_by(job.id, user_id)
    return render_template("jobs/show.html", job=job, retried_as=retried_as, retried=retried_text(service, job),
                           fix_for=fix_for,
                           steps=steps.rows(job, declared_steps(job)), left=time_left_text(job),
                           session_name=session_names([job]).get(job.session_id))


@bp.app_template_filter("took")
def took(job: Job) -> str:
    """How long the job ran ("1:05", as ui.js's ``duration``), or "1:05 so far" while it runs; "—" before."""
    start = _as_utc(job.started_at or job.created_at)
    if start is None:
        return "—"
    end = _as_utc(job.completed_at) or datetime.now(UTC)
    text = clock((end - start).total_seconds())
    return text if job.is_terminal else f"{text} so far"


def clock(seconds: float) -> str:
    """"0:42", "12:05", "1:02:07" (ui.js's ``duration``)."""
    minutes, seconds = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def declared_steps(job: Job) -> tuple[str, ...]:
    """The steps ``job``'s operation declares (none for an operation the app no longer offers)."""
    return get_operation(job.job_type).steps if job.job_type in {op.name for op in all_operations()} else ()


bp.add_app_template_filter(steps.step_time, "step_time")


def time_left_text(job: Job) -> str:
    """"about 0:20 left (based on your last 5 runs)" for an active job with an estimate (ui.js's ``leftText``)."""
    estimate = job.estimate
    left = time_left(job.timeline, estimate, job.started_at, datetime.now(UTC)) if not job.is_terminal else None
    if left is None:
        return ""
    runs = estimate["runs"]
    basis = (f"your last {runs} runs" if estimate["basis"] == "user"
             else f"{runs} earlier run{'' if runs == 1 else 's'} by all users")
    guess = f"about {clock(left)} left" if round(left) > 0 else "longer than usual"
    return f"{guess} (based on {basis})"


def retried_text(service, job: Job) -> str:
    """How the attempt ``job`` retried ended: "failed in step 2 of 3, “Build”" ("" when it is gone or none)."""
    if not job.retry_of:
        return ""
    try:
        earlier = service.get(job.retry_of, _uid())
    except JobNotFound:
        return ""
    ended = {"failed": "failed", "cancelled": "was cancelled"}.get(earlier.status.value, earlier.status.value)
    where = steps.reached(earlier)
    return f"{ended} in step {where[0]} of {where[1]}, “{where[2]}”" if where else ended


def session_names(jobs: list[Job]) -> dict[str, str]:
    """The names of the sessions ``jobs`` belong to (by session id as the jobs hold it)."""
    return user_session_names({int(job.session_id) for job in jobs if job.session_id and job.session_id.isdigit()})


@bp.post("/jobs/<job_id>/cancel")
@login_required
def cancel(job_id: str):
    try:
        job = current_jobs().cancel(job_id, _uid())
    except EpmError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Cancelling {job.title or job.job_type}…", "success")
    return redirect(_back())


@bp.post("/jobs/<job_id>/retry")
@login_required
def retry(job_id: str):
    try:
        job = current_jobs().retry(job_id, _uid())
    except EpmError as exc:
        flash(exc.message, "error")
    else:
        flash(f"{job.title or job.job_type} started again. You can leave this page; it keeps running.", "success")
    return redirect(_back())


def _back() -> str:
    """Where the form came from (``next``, a path on this site), else the dashboard."""
    target = request.form.get("next") or request.args.get("next") or ""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.scheme and not parts.netloc:
        return target
    return url_for("jobs_pages.index")
