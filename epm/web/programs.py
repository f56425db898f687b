"""Programs: the generated EPM programs, the ones being generated, one program in full, two versions
compared, and a program's exports (tasks as CSV, milestones as iCalendar)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import func, select

from ..errors import NotFound, ValidationFailed
from ..extensions import db
from ..jobs import current_jobs
from ..jobs.job import iso
from ..models import Program, StrategySession
from ..operations.compare import compare
from ..operations.export import program_csv, program_ics
from .auth import signed_in_user_id as _uid
from .gantt import layout

bp = Blueprint("programs", __name__)

MAX_LIMIT = 100
RECENT = 5


def _programs(limit: int | None = None) -> list[tuple[Program, str | None]]:
    """The user's programs newest first, each with its session's name (None once the session is deleted)."""
    query = (select(Program, StrategySession.name)
             .outerjoin(StrategySession, (StrategySession.id == Program.session_id)
                        & (StrategySession.user_id == Program.user_id))
             .where(Program.user_id == int(_uid()))
             .order_by(Program.created_at.desc(), Program.id.desc()))
    if limit:
        query = query.limit(limit)
    return [(program, name) for program, name in db.session.execute(query).all()]


@bp.app_template_filter("money")
def money(amount: Any) -> str:
    """An exact amount (the programs store strings) with thousands separators: 250000.00 -> 250,000.00."""
    if amount is None or amount == "":
        return "—"
    try:
        return f"{Decimal(str(amount)):,.2f}"
    except InvalidOperation:
        return str(amount)


def _latest_versions() -> dict[int, int]:
    """The newest version number of each of the user's sessions."""
    rows = db.session.execute(select(Program.session_id, func.max(Program.version))
                              .where(Program.user_id == int(_uid()), Program.session_id.is_not(None))
                              .group_by(Program.session_id)).all()
    return {session_id: version for session_id, version in rows}


def is_latest(program: Program, latest: dict[int, int]) -> bool:
    return program.session_id is None or latest.get(program.session_id) == program.version


def program_dict(program: Program, session_name: str | None, latest: bool = True) -> dict[str, Any]:
    return {"id": program.id, "name": program.name, "url": url_for("programs.show", program_id=program.id),
            "session_id": program.session_id if session_name is not None else None, "session_name": session_name,
            "version": program.version, "latest": latest, "created_at": iso(program.created_at)}


@bp.get("/api/programs")
@login_required
def api_list() -> Response:
    raw = request.args.get("limit", "20")
    try:
        limit = int(raw)
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError
    except ValueError:
        raise ValidationFailed("Some filters are not valid.",
                               {"limit": f"must be a whole number from 1 to {MAX_LIMIT}"}) from None
    latest = _latest_versions()
    return jsonify(programs=[program_dict(p, name, is_latest(p, latest)) for p, name in _programs(limit)])


@bp.get("/programs")
@login_required
def index():
    programs = _programs()
    running = [job for job in current_jobs().jobs(_uid(), limit=50, status=None, job_type="epm_generation")
               if not job.is_terminal]
    session_names = dict(db.session.execute(
        select(StrategySession.id, StrategySession.name).where(StrategySession.user_id == int(_uid()))).all())
    return render_template("programs/index.html", programs=programs, recent=programs[:RECENT], running=running,
                           session_names={str(k): v for k, v in session_names.items()}, latest=_latest_versions())


def _owned(program_id: int) -> Program:
    program = db.session.scalar(select(Program).where(Program.id == program_id, Program.user_id == int(_uid())))
    if program is None:
        raise NotFound(f"There is no program {program_id}.", code="program_not_found")
    return program


def _versions(program: Program) -> list[Program]:
    """The programs of ``program``'s session, newest first (just this one when it has no session)."""
    if program.session_id is None:
        return [program]
    return list(db.session.scalars(select(Program).where(Program.session_id == program.session_id,
                                                         Program.user_id == program.user_id)
                                   .order_by(Program.version.desc(), Program.id.desc())))


@bp.get("/programs/<int:program_id>")
@login_required
def show(program_id: int):
    program = _owned(program_id)
    # Filtered by owner as well: a program never shows another user's session, whatever its session id.
    session = db.session.scalar(select(StrategySession).where(StrategySession.id == program.session_id,
                                                              StrategySession.user_id == program.user_id))
    data = program.data or {}
    max_load = max([float(w.get("load") or 0) for w in data.get("resources", {}).get("weeks", [])]
                   + [float(data.get("resources", {}).get("team_size") or 0), 1.0])
    versions = _versions(program)
    return render_template("programs/show.html", program=program, d=data, session=session,
                           gantt=layout(data, today=datetime.now(UTC).date()), max_load=max_load,
                           versions=versions, latest=versions[0])


@bp.get("/programs/<int:program_id>/compare")
@login_required
def compare_versions(program_id: int):
    """What changed between this program and another version of the same session (``?with=<id>``)."""
    program = _owned(program_id)
    versions = _versions(program)
    raw = request.args.get("with", "")
    if not raw:
        older = next((p for p in versions if p.version < program.version), None)
        if older is None:
            raise NotFound("This is the session's only program: there is no other version to compare with.",
                           code="no_other_version")
        other = older
    else:
        if not raw.isdigit():
            raise ValidationFailed("Choose a version to compare with.", {"with": "must be a program id"})
        other = _owned(int(raw))
        if other.session_id != program.session_id or other.id == program.id:
            raise ValidationFailed("Only two different versions of the same session's program can be compared.",
                                   {"with": "not another version of this program"})
    first, second = sorted((program, other), key=lambda p: (p.version, p.id))
    return render_template("programs/compare.html", old=first, new=second, versions=versions,
                           diff=compare(first.data or {}, second.data or {}), latest=versions[0])


def _download(body: str, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _filename(program: Program, extension: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in (program.data or {}).get("session", {}).get("name", "program"))
    return f"{stem.strip('-').lower()[:60] or 'program'}-v{program.version}.{extension}"


@bp.get("/programs/<int:program_id>/tasks.csv")
@login_required
def export_csv(program_id: int) -> Response:
    program = _owned(program_id)
    return _download(program_csv(program.data or {}), "text/csv; charset=utf-8", _filename(program, "csv"))


@bp.get("/programs/<int:program_id>/milestones.ics")
@login_required
def export_ics(program_id: int) -> Response:
    program = _owned(program_id)
    body = program_ics(program.data or {}, program_id=program.id, version=program.version,
                       host=request.host.split(":")[0] or "epm")
    return _download(body, "text/calendar; charset=utf-8", _filename(program, "ics"))
