"""``flask jobs ...``: what an operator needs to look at and act on jobs."""

from __future__ import annotations

import json

import click
from flask import current_app
from sqlalchemy import select

from ..errors import EpmError
from ..extensions import db
from .job import Job
from .models import BackgroundJob

jobs_cli = click.Group("jobs", help="Inspect and act on background jobs.")


def _service():
    from . import current_jobs

    return current_jobs()


def _live_or_row(job_id: str) -> tuple[Job | None, BackgroundJob | None]:
    service = _service()
    return service.store.load(job_id), db.session.get(BackgroundJob, job_id)


def _line(job: Job) -> str:
    return (f"{job.id}  {job.status.value:<9}  {job.progress:>3}%  {job.job_type:<16}  user={job.user_id:<6}  "
            f"{job.created_at or '':<24}  {job.message}")


@jobs_cli.command("list")
@click.option("--status", help="Only jobs with this status.")
@click.option("--type", "job_type", help="Only jobs of this operation.")
@click.option("--user", "user_id", help="Only this user's jobs (user id).")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_jobs(status: str | None, job_type: str | None, user_id: str | None, limit: int, as_json: bool) -> None:
    """Recent jobs, newest first, with live state from Redis."""
    query = select(BackgroundJob).order_by(BackgroundJob.created_at.desc()).limit(limit)
    if job_type:
        query = query.where(BackgroundJob.job_type == job_type)
    if user_id:
        query = query.where(BackgroundJob.user_id == user_id)
    rows = db.session.scalars(query).all()
    live = _service().store.load_many(row.id for row in rows)
    jobs = [live.get(row.id) or row.to_job() for row in rows]
    if status:
        jobs = [job for job in jobs if job.status.value == status]
    for job in jobs:
        click.echo(job.to_json() if as_json else _line(job))
    if not jobs and not as_json:
        click.echo("No jobs.")


@jobs_cli.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def show_job(job_id: str, as_json: bool) -> None:
    """One job: its Redis hash beside its PostgreSQL row."""
    service = _service()
    raw = service.store.redis.hgetall(service.store.job_key(job_id))
    row = db.session.get(BackgroundJob, job_id)
    if not raw and row is None:
        raise click.ClickException(f"There is no job {job_id!r}.")
    row_data = None
    if row is not None:
        row_data = {c.name: getattr(row, c.name) for c in BackgroundJob.__table__.columns}
    if as_json:
        click.echo(json.dumps({"redis": raw or None, "database": row_data}, default=str, indent=2))
        return
    names = list(dict.fromkeys([*(raw or {}), *(row_data or {})]))
    width = max(len(n) for n in names)
    click.echo(f"{'field':<{width}}  {'redis (' + service.store.job_key(job_id) + ')':<40}  database")
    for name in names:
        click.echo(f"{name:<{width}}  {str((raw or {}).get(name, '-')):<40}  {(row_data or {}).get(name, '-')}")


@jobs_cli.command("cancel")
@click.argument("job_id")
def cancel_job(job_id: str) -> None:
    """Ask a running job to stop."""
    job, row = _live_or_row(job_id)
    owner = (job.user_id if job else row.user_id if row else None)
    if owner is None:
        raise click.ClickException(f"There is no job {job_id!r}.")
    try:
        result = _service().cancel(job_id, owner)
    except EpmError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{job_id}: cancel requested" if not result.is_terminal else f"{job_id}: {result.status.value}")


@jobs_cli.command("reap")
def reap() -> None:
    """Mark jobs whose heartbeat lapsed as failed/interrupted, now."""
    maintenance = current_app.extensions["epm.maintenance"]
    done = maintenance.run_once()
    click.echo(f"adopted {done['adopted']}, reaped {done['reaped']}, flushed {done['flushed']}")


@jobs_cli.command("flush")
def flush() -> None:
    """Write terminal states waiting in the outbox to the database, now."""
    service = _service()
    written = service.flush_outbox(limit=10_000)
    click.echo(f"written {written}; still waiting {service.store.outbox_depth()}")
