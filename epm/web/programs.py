"""Programs: the generated EPM programs, the ones being generated, and one program in full."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select

from ..errors import NotFound, ValidationFailed
from ..extensions import db
from ..jobs import current_jobs
from ..jobs.job import iso
from ..models import Program, StrategySession
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


def program_dict(program: Program, session_name: str | None) -> dict[str, Any]:
    return {"id": program.id, "name": program.name, "url": url_for("programs.show", program_id=program.id),
            "session_id": program.session_id if session_name is not None else None, "session_name": session_name,
            "created_at": iso(program.created_at)}


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
    return jsonify(programs=[program_dict(p, name) for p, name in _programs(limit)])


@bp.get("/programs")
@login_required
def index():
    programs = _programs()
    running = [job for job in current_jobs().list(_uid(), limit=50, status=None, job_type="epm_generation")
               if not job.is_terminal]
    session_names = dict(db.session.execute(
        select(StrategySession.id, StrategySession.name).where(StrategySession.user_id == int(_uid()))).all())
    return render_template("programs/index.html", programs=programs, recent=programs[:RECENT], running=running,
                           session_names={str(k): v for k, v in session_names.items()})


@bp.get("/programs/<int:program_id>")
@login_required
def show(program_id: int):
    program = db.session.scalar(select(Program).where(Program.id == program_id, Program.user_id == int(_uid())))
    if program is None:
        raise NotFound(f"There is no program {program_id}.", code="program_not_found")
    # Filtered by owner as well: a program never shows another user's session, whatever its session id.
    session = db.session.scalar(select(StrategySession).where(StrategySession.id == program.session_id,
                                                              StrategySession.user_id == program.user_id))
    data = program.data or {}
    max_load = max([float(w.get("load") or 0) for w in data.get("resources", {}).get("weeks", [])]
                   + [float(data.get("resources", {}).get("team_size") or 0), 1.0])
    return render_template("programs/show.html", program=program, d=data, session=session,
                           gantt=layout(data), max_load=max_load)
