"""The start page, and what every signed-in page hands its live widgets (operation labels, session names)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..jobs.registry import all_operations
from ..models import StrategySession
from .auth import MIN_PASSWORD
from .operation_panels import FIXES

bp = Blueprint("home", __name__)
log = logging.getLogger(__name__)


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    return redirect(url_for("sessions.index"))


@bp.app_context_processor
def live_data() -> dict[str, Any]:
    """``live_data()`` for base.html: the JSON the job widgets read instead of hard-coding names."""

    def build() -> dict[str, Any]:
        operations = {}
        for op in all_operations():
            operations[op.name] = {"title": op.title, "ready": op.ready, "view_label": op.view_label,
                                   "running": op.running_label,
                                   "steps": list(getattr(op, "steps", ()) or ())}
        sessions = session_names() if current_user.is_authenticated else {}
        fixes = {code: {"label": fix.label, "field": fix.field, "retry": fix.retry_helps}
                 for code, fix in FIXES.items()}
        return {"operations": operations, "sessions": sessions, "fixes": fixes}

    return {"live_data": build, "nav_current": _nav_current, "min_password": MIN_PASSWORD}


def session_names(ids: set[int] | None = None) -> dict[str, str]:
    """The signed-in user's session names by id (only ``ids`` when given), in one query.

    The names are context, not content: while the database is away (the live view keeps working from
    Redis) they are left out, and pages and widgets say "Session 12" instead.
    """
    query = select(StrategySession.id, StrategySession.name).where(StrategySession.user_id == int(current_user.id))
    if ids is not None:
        if not ids:
            return {}
        query = query.where(StrategySession.id.in_(ids))
    try:
        rows = db.session.execute(query).all()
    except SQLAlchemyError:
        log.warning("session names unavailable", exc_info=True)
        db.session.rollback()
        return {}
    return {str(row.id): row.name for row in rows}


def _nav_current(section: str) -> bool:
    """Whether the page being rendered belongs to the navigation's ``section`` (for ``aria-current``)."""
    endpoint = request.endpoint or ""
    return endpoint.startswith(section + ".") or (section == "sessions" and endpoint.startswith("analyses."))
