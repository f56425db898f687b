"""``flask jobs ...``: what an operator needs to look at and act on jobs.

Each command works on the Redis and database the servers use (``REDIS_URL``, ``DATABASE_URL``,
``EPM_KEY_PREFIX``), prints a table for a person, or one JSON document with ``--json`` for a script,
and fails with one line and exit status 1 when a job is unknown or a backend cannot be reached.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import redis
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import EpmError
from ..extensions import db
from .job import Job, JobStatus, iso
from .models import BackgroundJob
from .registry import all_operations
from .service import ACTIVE_STATUSES as ACTIVE

# Redis hash fields whose database column has another name.
_COLUMN_OF = {"message": "progress_message", "error": "error_message", "result": "result_data", "timeline": "step_log"}
_FIELD_OF = {column: name for name, column in _COLUMN_OF.items()}
_PURGE_BATCH = 500


class _JobsGroup(click.Group):
    """Turns a refused action or a backend that cannot be reached into a one-line error (exit status 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        # An operator's command is not a server: it leaves the upkeep rounds to the servers' processes.
        from flask import current_app, has_app_context

        if has_app_context() and "epm.maintenance" in current_app.extensions:
            current_app.extensions["epm.maintenance"].stop()
        try:
            return super().invoke(ctx)
        except EpmError as exc:
            raise click.ClickException(exc.message) from None
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis cannot be reached ({exc}); check REDIS_URL.") from None
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise click.ClickException(f"Database error: {reason} (check DATABASE_URL, and that "
                                       "`flask --app wsgi db upgrade` has run).") from None


jobs_cli = _JobsGroup("jobs", help="Inspect and act on background jobs (add --json to any command for scripts).")


class Duration(click.ParamType):
    """An age like ``30d``, ``12h`` or ``90m``."""

    name = "duration"
    _units = {"d": "days", "h": "hours", "m": "minutes"}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", str(value))
        if not match or int(match.group(1)) == 0:
            self.fail(f"{value!r} is not a duration: write a whole number above 0 followed by d, h or m "
                      "(30d, 12h, 90m).", param, ctx)
        return timedelta(**{self._units[match.group(2)]: int(match.group(1))})


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")(fn)


def _service():
    from . import current_jobs

    return current_jobs()


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_value))


def _json_value(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; the last one is left as it is (a message, a long value)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False))
                   + "  " + row[-1])


def _find(job_id: str) -> tuple[Job | None, BackgroundJob | None]:
    """The job's live state and its row; a one-line error when neither Redis nor the database knows it."""
    job = _service().store.load(job_id)
    row = db.session.get(BackgroundJob, job_id)
    if job is None and row is None:
        raise click.ClickException(f"There is no job {job_id!r} (neither in Redis nor in background_jobs).")
    return job, row


def _owner(job_id: str) -> str:
    job, row = _find(job_id)
    return job.user_id if job is not None else row.user_id


def _row_dict(row: BackgroundJob | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {column.name: getattr(row, column.name) for column in BackgroundJob.__table__.columns}


def _short(value: Any, width: int = 48) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, datetime):
        text = iso(value) or "-"
    elif isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


# -- looking -----------------------------------------------------------------------------------------------
@jobs_cli.command("list")
@click.option("--status", type=click.Choice([status.value for status in JobStatus]), help="Only jobs with this status.")
@click.option("--type", "job_type", metavar="TYPE", help="Only jobs of this operation (demo_countdown, ...).")
@click.option("--user", "user_id", metavar="USER_ID", help="Only this user's jobs (the user id).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_json_option
def list_jobs(status: str | None, job_type: str | None, user_id: str | None, limit: int, as_json: bool) -> None:
    """Recent jobs, newest first: their rows, with the live state from Redis laid over them.

    STATUS is the live one; DB is what the row says (a running job's row says pending until it ends).
    """
    query = select(BackgroundJob).order_by(BackgroundJob.created_at.desc()).limit(limit)
    if job_type:
        query = query.where(BackgroundJob.job_type == job_type)
    if user_id:
        query = query.where(BackgroundJob.user_id == user_id)
    if status:
        # A row says pending until its job's end is written (later, from the outbox, if the database was down).
        query = query.where(BackgroundJob.status.in_({status, *ACTIVE}))
    rows = db.session.scalars(query).all()
    live = _service().store.load_many(row.id for row in rows)
    jobs = []
    for row in rows:
        job = live.get(row.id) or row.to_job()
        if status and job.status.value != status:
            continue
        job.extra.update(recorded_status=row.status, acknowledged=row.acknowledged_at is not None)
        jobs.append(job)
    if as_json:
        _echo_json([job.to_dict() for job in jobs])
        return
    if not jobs:
        known = {operation.name for operation in all_operations()}
        hint = f" (no operation is named {job_type!r}; known: {', '.join(sorted(known))})" \
            if job_type and job_type not in known else ""
        click.echo(f"No jobs{hint}.")
        return
    _table(["ID", "STATUS", "DB", "PROGRESS", "TYPE", "USER", "CREATED", "MESSAGE"],
           [[job.id, job.status.value, job.extra["recorded_status"], f"{job.progress}%", job.job_type, job.user_id,
             job.created_at or "-", job.error or job.message] for job in jobs])


@jobs_cli.command("show")
@click.argument("job_id")
@_json_option
def show_job(job_id: str, as_json: bool) -> None:
    """One job: its Redis hash beside its database row, with its TTL, heartbeat deadline and outbox place."""
    store = _service().store
    live = store.inspect(job_id)
    row = db.session.get(BackgroundJob, job_id)
    if not live["hash"] and row is None:
        raise click.ClickException(f"There is no job {job_id!r} (neither in Redis nor in background_jobs).")
    row_data = _row_dict(row)
    if as_json:
        _echo_json({"id": job_id, "redis": live, "database": row_data})
        return
    raw, columns = live["hash"], row_data or {}
    lines = []
    known = [field.name for field in dataclass_fields(Job) if field.name != "extra"]
    for name in dict.fromkeys([*known, *raw, *(_FIELD_OF.get(column, column) for column in columns)]):
        if name not in raw and _COLUMN_OF.get(name, name) not in columns:
            continue
        column = _COLUMN_OF.get(name, name)
        in_redis, in_db = raw.get(name), columns.get(column)
        differs = name in raw and column in columns and _comparable(in_redis) != _comparable(in_db)
        label = name if column == name else f"{name} / {column}"
        lines.append([label, _short(in_redis), _short(in_db, 200) + ("   <- differs" if differs else "")])
    _table(["field", f"redis {live['key']}", "database background_jobs"], lines)
    click.echo("")
    click.echo(f"hash TTL:           {_ttl_text(live['ttl'], bool(raw))}")
    click.echo(f"heartbeat deadline: {_deadline_text(live['deadline'], store.active_key)}")
    click.echo(f"outbox:             {'waiting for the database' if live['in_outbox'] else 'no'}")


def _comparable(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return iso(value) or ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"))
        except ValueError:
            return value
    return str(value)


def _ttl_text(ttl: int | None, present: bool) -> str:
    if not present:
        return "no hash in Redis (expired after the retention period, purged, or Redis lost it)"
    return f"{ttl} s" if ttl is not None else "none (kept while the job is active, or until its end is recorded)"


def _deadline_text(deadline: float | None, active_key: str) -> str:
    if deadline is None:
        return f"not in {active_key}"
    left = deadline - time.time()
    when = iso(datetime.fromtimestamp(deadline, UTC))
    return f"{when} (in {left:.1f} s)" if left >= 0 else f"{when} (overdue by {-left:.1f} s: the reaper's next)"


@jobs_cli.command("stats")
@_json_option
def stats(as_json: bool) -> None:
    """Counts by status and type from the database; active, overdue and outbox sizes from Redis."""
    store = _service().store
    grouped = db.session.execute(select(BackgroundJob.job_type, BackgroundJob.status, func.count())
                                 .group_by(BackgroundJob.job_type, BackgroundJob.status)).all()
    by_type: dict[str, dict[str, int]] = {}
    by_status: dict[str, int] = {}
    for job_type, status, count in grouped:
        by_type.setdefault(job_type, {})[status] = count
        by_status[status] = by_status.get(status, 0) + count
    queues = store.queue_stats()
    queues["dead_letters"] = store.dead_letter_count()
    if as_json:
        _echo_json({"database": {"total": sum(by_status.values()), "by_status": by_status,
                                 "by_type": {t: sum(s.values()) for t, s in by_type.items()},
                                 "by_type_and_status": by_type},
                    "redis": {"prefix": store.prefix, **queues}})
        return
    statuses = [status.value for status in JobStatus if status.value in by_status]
    click.echo(f"background_jobs: {sum(by_status.values())} row(s) (a running job's row says pending until it ends)")
    if by_type:
        _table(["TYPE", *(s.upper() for s in statuses), "TOTAL"],
               [[job_type, *(of_type.get(s, 0) for s in statuses), sum(of_type.values())]
                for job_type, of_type in sorted(by_type.items())]
               + [["all", *(by_status[s] for s in statuses), sum(by_status.values())]])
    click.echo(f"redis ({store.prefix}): {queues['active']} active, {queues['overdue']} overdue "
               f"(heartbeat lapsed), {queues['outbox']} in the outbox, {queues['dead_letters']} dead letter(s)")


# -- acting ------------------------------------------------------------------------------------------------
@jobs_cli.command("cancel")
@click.argument("job_id")
@click.option("--wait", default=5.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to wait for the job to end.")
@_json_option
def cancel_job(job_id: str, wait: float, as_json: bool) -> None:
    """Ask a running job to stop; its runner ends it as cancelled at its next check (within a second)."""
    service = _service()
    job = service.cancel(job_id, _owner(job_id))
    deadline = time.monotonic() + wait
    while not job.is_terminal and time.monotonic() < deadline:
        time.sleep(0.1)
        job = service.store.load(job_id) or job
    if as_json:
        _echo_json(job.to_dict())
    elif job.is_terminal:
        click.echo(f"{job_id}: {job.status.value}")
    else:
        click.echo(f"{job_id}: cancel requested; not ended within {wait:g} s (its runner checks about once a "
                   "second; a job whose process is gone is ended by the reaper)")


@jobs_cli.command("retry")
@click.argument("job_id")
@_json_option
def retry_job(job_id: str, as_json: bool) -> None:
    """Start a failed or cancelled job again (same operation and parameters; the new job's retry_of is JOB_ID).

    The new job runs in this process, which follows it until it ends; its user sees it live as usual.
    Ctrl-C records it as interrupted. Exit status 1 unless it completes.
    """
    service = _service()
    job = service.retry(job_id, _owner(job_id))
    if not as_json:
        click.echo(f"{job.id}: retry of {job_id} ({job.job_type}, user {job.user_id}); running here until it ends")
    try:
        for state in _follow(service.store, job.id):
            job = state
            if not as_json:
                click.echo(f"  {state.status.value:<9} {state.progress:>3}%  {state.error or state.message}")
    except KeyboardInterrupt:
        service.runner.shutdown(grace=0)
        raise click.ClickException(f"{job.id}: interrupted (recorded as failed/interrupted; retry it again)") from None
    service.runner.shutdown(grace=30)  # the end is in Redis; wait for the database write
    db.session.expire_all()
    final = service.store.load(job.id) or job
    if as_json:
        _echo_json(final.to_dict())
    else:
        click.echo(f"{final.id}: {final.status.value}")
    if final.status is not JobStatus.COMPLETED:
        click.get_current_context().exit(1)


def _follow(store, job_id: str) -> Iterator[Job]:
    """Yield each new state of the job (read from Redis, as any instance would see it) until it ends."""
    seen = None
    while True:
        job = store.load(job_id)
        if job is not None and (job.status, job.progress, job.message) != seen:
            seen = (job.status, job.progress, job.message)
            yield job
            if job.is_terminal:
                return
        time.sleep(0.2)


@jobs_cli.command("reap")
@_json_option
def reap(as_json: bool) -> None:
    """One upkeep round now: reconcile Redis after it lost data, adopt orphaned rows, reap, flush the outbox.

    A job whose heartbeat lapsed (its process is gone) ends as failed/interrupted; each is listed.
    """
    service = _service()
    reconciled = service.reconcile_lost_data()
    adopted = service.adopt_orphans()
    reaped = service.reap(resume=False)  # a job resumed here would die with this command
    flushed = service.flush_outbox(limit=10_000)
    if as_json:
        _echo_json({"reconciled": reconciled, "adopted": adopted, "reaped": [job.to_dict() for job in reaped],
                    "flushed": flushed})
        return
    click.echo(f"reconciled {reconciled}, adopted {adopted}, reaped {len(reaped)}, flushed {flushed}")
    for job in reaped:
        click.echo(f"  interrupted {job.id}  {job.job_type}  user={job.user_id}  started {job.started_at or '-'}")


@jobs_cli.command("flush")
@_json_option
def flush(as_json: bool) -> None:
    """Write terminal states waiting in the outbox to the database, now."""
    service = _service()
    written = service.flush_outbox(limit=10_000)
    waiting = service.store.outbox_depth()
    if as_json:
        _echo_json({"written": written, "waiting": waiting})
    else:
        click.echo(f"written {written}; still waiting {waiting}")


@jobs_cli.command("dead-letters")
@click.option("--retry", "retry_ids", multiple=True, metavar="JOB_ID",
              help="Put this dead letter back in the outbox (after fixing its cause); repeatable.")
@_json_option
def dead_letters(retry_ids: tuple[str, ...], as_json: bool) -> None:
    """Finished jobs whose terminal state the database refused for its data, with the database's reason."""
    store = _service().store
    letters = store.dead_letters()
    for job_id in retry_ids:
        if job_id not in letters:
            raise click.ClickException(f"{job_id} is not a dead letter.")
        store.outbox_add(job_id)
        store.dead_letter_remove(job_id)
    if retry_ids:
        letters = store.dead_letters()
    if as_json:
        _echo_json({"dead_letters": [{"job_id": job_id, "reason": letter["reason"],
                                      "at": iso(datetime.fromtimestamp(letter["at"], UTC))}
                                     for job_id, letter in sorted(letters.items())],
                    "requeued": list(retry_ids)})
        return
    for job_id in retry_ids:
        click.echo(f"{job_id} is back in the outbox")
    if not letters:
        click.echo("no dead letters")
        return
    _table(["JOB", "SINCE", "REASON"],
           [[job_id, iso(datetime.fromtimestamp(letter["at"], UTC)), _short(letter["reason"], 80)]
            for job_id, letter in sorted(letters.items())])


@jobs_cli.command("purge")
@click.option("--older-than", "age", required=True, type=Duration(),
              help="Finished at least this long ago: 30d, 12h or 90m.")
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@_json_option
def purge(age: timedelta, dry_run: bool, as_json: bool) -> None:
    """Delete finished jobs older than --older-than: their rows and their Redis keys. Active jobs are never touched."""
    store = _service().store
    cutoff = datetime.now(UTC) - age
    rows = deleted_hashes = 0
    by_status: dict[str, int] = {}
    ids: list[str] = []
    for batch in _finished_before(cutoff):
        live = store.load_many(job_id for job_id, _, _ in batch)
        # The row is final, but should Redis say the job is still going, it is left alone.
        batch = [entry for entry in batch if entry[0] not in live or live[entry[0]].is_terminal]
        for _, _, status in batch:
            by_status[status] = by_status.get(status, 0) + 1
        rows += len(batch)
        if dry_run:
            ids.extend(job_id for job_id, _, _ in batch)
            continue
        db.session.execute(delete(BackgroundJob).where(BackgroundJob.id.in_([e[0] for e in batch]),
                                                       BackgroundJob.status.not_in(ACTIVE)))
        db.session.commit()
        deleted_hashes += store.purge((job_id, user_id) for job_id, user_id, _ in batch)
    if as_json:
        result = {"dry_run": dry_run, "cutoff": iso(cutoff), "rows": rows, "redis_hashes": deleted_hashes,
                  "by_status": by_status}
        if dry_run:
            result["job_ids"] = ids
        _echo_json(result)
        return
    detail = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items())) or "none"
    if dry_run:
        click.echo(f"would purge {rows} finished job(s) that ended before {iso(cutoff)} ({detail}); nothing deleted")
    else:
        click.echo(f"purged {rows} finished job(s) that ended before {iso(cutoff)} ({detail}): "
                   f"{rows} row(s), {deleted_hashes} Redis hash(es)")


def _finished_before(cutoff: datetime) -> Iterator[list[tuple[str, str, str]]]:
    """Batches of ``(id, user_id, status)`` of finished rows that ended before ``cutoff``, by id."""
    ended = func.coalesce(BackgroundJob.completed_at, BackgroundJob.created_at)
    after = ""
    while True:
        batch = db.session.execute(
            select(BackgroundJob.id, BackgroundJob.user_id, BackgroundJob.status)
            .where(BackgroundJob.status.not_in(ACTIVE), ended < cutoff, BackgroundJob.id > after)
            .order_by(BackgroundJob.id).limit(_PURGE_BATCH)).all()
        if not batch:
            return
        after = batch[-1][0]
        yield [tuple(entry) for entry in batch]
