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
from .operation_panels import FIXES, PANELS

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
            panel = PANELS.get(op.name)
            operations[op.name] = {"title": op.title, "ready": op.ready, "view_label": op.view_label,
                                   "running": panel.running if panel else f"{op.title} in progress…",
                                   "steps": list(getattr(op, "steps", ()) or ())}
        sessions = {}
        if current_user.is_authenticated:
            try:
                rows = db.session.execute(select(StrategySession.id, StrategySession.name)
                                          .where(StrategySession.user_id == int(current_user.id))).all()
            except SQLAlchemyError:
                # An error page while the database is away: the widgets fall back to "Session 12".
                log.warning("session names unavailable for the live widgets", exc_info=True)
                db.session.rollback()
                rows = []
            sessions = {str(row.id): row.name for row in rows}
        fixes = {code: {"label": fix.label, "field": fix.field, "retry": fix.retry_helps}
                 for code, fix in FIXES.items()}
        return {"operations": operations, "sessions": sessions, "fixes": fixes}

    return {"live_data": build, "nav_current": _nav_current, "min_password": MIN_PASSWORD}


def _nav_current(section: str) -> bool:
    """Whether the page being rendered belongs to the navigation's ``section`` (for ``aria-current``)."""
    endpoint = request.endpoint or ""
    return endpoint.startswith(section + ".") or (section == "sessions" and endpoint.startswith("analyses."))
