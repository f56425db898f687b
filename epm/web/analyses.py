"""A session's latest research report and business-model canvas, as pages; the research as Markdown."""

from __future__ import annotations

from flask import Blueprint, Response, render_template
from flask_login import login_required
from sqlalchemy import select

from ..errors import NotFound
from ..extensions import db
from ..models import Analysis, StrategySession
from ..operations.export import research_markdown
from .sessions import owned_session

bp = Blueprint("analyses", __name__)

# The classic canvas grid: (block key, grid area) left to right, top to bottom.
CANVAS_AREAS = {"key_partners": "kp", "key_activities": "ka", "key_resources": "kr",
                "value_propositions": "vp", "customer_relationships": "cr", "channels": "ch",
                "customer_segments": "cs", "cost_structure": "cost", "revenue_streams": "rev"}


def latest(session: StrategySession, kind: str) -> Analysis | None:
    return db.session.scalar(select(Analysis).where(Analysis.session_id == session.id,
                                                    Analysis.user_id == session.user_id, Analysis.kind == kind)
                             .order_by(Analysis.created_at.desc(), Analysis.id.desc()).limit(1))


@bp.get("/sessions/<int:session_id>/canvas")
@login_required
def canvas(session_id: int):
    session = owned_session(session_id)
    analysis = latest(session, "bmc")
    return render_template("sessions/canvas.html", s=session, analysis=analysis, areas=CANVAS_AREAS)


@bp.get("/sessions/<int:session_id>/research")
@login_required
def research(session_id: int):
    session = owned_session(session_id)
    return render_template("sessions/research.html", s=session, analysis=latest(session, "research"))


@bp.get("/sessions/<int:session_id>/research.md")
@login_required
def research_export(session_id: int) -> Response:
    session = owned_session(session_id)
    analysis = latest(session, "research")
    if analysis is None:
        raise NotFound("This session has no research report yet: run web research first.", code="no_research")
    body = research_markdown(analysis.data or {}, session_name=session.name,
                             researched=analysis.created_at.strftime("%Y-%m-%d %H:%M UTC"))
    response = Response(body, mimetype="text/markdown; charset=utf-8")
    stem = "".join(c if c.isalnum() else "-" for c in session.name).strip("-").lower()[:60] or "research"
    response.headers["Content-Disposition"] = f'attachment; filename="{stem}-research.md"'
    return response
