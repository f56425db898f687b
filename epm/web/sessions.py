"""Strategy sessions: list, create, edit, delete, start operations, as pages and as JSON."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select

from ..api_schema import SessionFields, SessionPatch
from ..errors import Conflict, DuplicateJob, EpmError, NotFound, ValidationFailed
from ..extensions import db
from ..jobs import current_jobs
from ..jobs.api import start_response
from ..jobs.job import iso
from ..jobs.registry import get_operation
from ..models import StrategySession
from ..request_body import parse_body
from .auth import signed_in_user_id as _uid
from .operation_panels import blocked_reason, operation_panels
from .session_input import CURRENCIES, clean_session, from_form

bp = Blueprint("sessions", __name__)


def owned_session(session_id: int) -> StrategySession:
    """The signed-in user's session ``session_id``; 404 for a missing one or anyone else's."""
    session = db.session.scalar(select(StrategySession).where(StrategySession.id == session_id,
                                                              StrategySession.user_id == int(_uid())))
    if session is None:
        raise NotFound(f"There is no strategy session {session_id}.", code="session_not_found")
    return session


def session_dict(session: StrategySession) -> dict[str, Any]:
    return {"id": session.id, "name": session.name, "business": session.business or "",
            "objectives": list(session.objectives or []),
            "budget": str(session.budget) if session.budget is not None else None,
            "currency": session.currency or "USD",
            "deadline": session.deadline.isoformat() if session.deadline else None,
            "team_size": session.team_size, "source_urls": list(session.source_urls or []),
            "url": url_for("sessions.show", session_id=session.id),
            "created_at": iso(session.created_at),
            "updated_at": iso(session.updated_at)}


def _user_sessions() -> list[StrategySession]:
    return list(db.session.scalars(select(StrategySession).where(StrategySession.user_id == int(_uid()))
                                   .order_by(StrategySession.updated_at.desc(), StrategySession.id.desc())))


def _create(values: dict[str, Any]) -> StrategySession:
    session = StrategySession(user_id=int(_uid()), **values)
    db.session.add(session)
    db.session.commit()
    return session


def _update(session: StrategySession, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(session, key, value)
    db.session.commit()


def _delete(session: StrategySession) -> None:
    """Delete the session, refused (409) while one of its jobs is active: cancel it first."""
    active = current_jobs().active_for_session(_uid(), str(session.id))
    if active:
        raise Conflict(f"{active[0].title or active[0].job_type} is running for this session; "
                       "cancel the running job first.", code="session_busy",
                       details={"job": active[0].to_dict()})
    db.session.delete(session)
    db.session.commit()


def _start(session: StrategySession, operation_name: str):
    operation = get_operation(operation_name)
    if not operation.requires_session:
        raise EpmError(f"{operation.title} does not run for a strategy session; start it from "
                       "POST /api/background-jobs.", code="not_a_session_operation")
    blocked = blocked_reason(operation.name, session)
    if blocked:
        raise EpmError(f"{operation.title} cannot start: {blocked}", code="session_incomplete",
                       status=422)
    return current_jobs().start(operation.name, user_id=_uid(), session_id=str(session.id), params={})


# -- JSON ------------------------------------------------------------------------------------------
def _session_body(model, *, partial: bool = False) -> dict[str, Any]:
    """The body checked against the published model, then converted by the rules the form shares.

    When the body breaks the model, each field gets the rules' wording where they have one.
    """
    try:
        body = parse_body(model)
    except ValidationFailed as shape:
        try:
            clean_session(request.get_json(silent=True), partial=partial)
        except ValidationFailed as rules:
            raise ValidationFailed(rules.message, {**shape.fields, **rules.fields}) from None
        raise
    return clean_session(body, partial=partial)


@bp.get("/api/sessions")
@login_required
def api_list() -> Response:
    return jsonify(sessions=[session_dict(s) for s in _user_sessions()])


@bp.post("/api/sessions")
@login_required
def api_create() -> Response:
    session = _create(_session_body(SessionFields))
    response = jsonify(session=session_dict(session))
    response.status_code = 201
    response.headers["Location"] = url_for("sessions.api_get", session_id=session.id)
    return response


@bp.get("/api/sessions/<int:session_id>")
@login_required
def api_get(session_id: int) -> Response:
    return jsonify(session=session_dict(owned_session(session_id)))


@bp.patch("/api/sessions/<int:session_id>")
@login_required
def api_update(session_id: int) -> Response:
    session = owned_session(session_id)
    _update(session, _session_body(SessionPatch, partial=True))
    return jsonify(session=session_dict(session))


@bp.delete("/api/sessions/<int:session_id>")
@login_required
def api_delete(session_id: int) -> Response:
    _delete(owned_session(session_id))
    return Response(status=204)


@bp.post("/api/sessions/<int:session_id>/<operation>")
@login_required
def api_start(session_id: int, operation: str) -> Response:
    return start_response(_start(owned_session(session_id), operation))


# -- pages -----------------------------------------------------------------------------------------
@bp.app_template_filter("in_currency")
def in_currency(amount: Decimal | None, currency: str | None) -> str:
    """"4,500,000 USD" (no cents on large sums, as money.js shows it with the reader's locale)."""
    if amount is None:
        return "—"
    places = 0 if abs(amount) >= 1000 or amount == amount.to_integral_value() else 2
    return f"{amount:,.{places}f} {currency or 'USD'}"


@bp.get("/sessions")
@login_required
def index():
    return render_template("sessions/index.html", sessions=_user_sessions())


def _form(session: StrategySession | None, values: dict[str, Any], errors: dict[str, str] | None = None):
    """The session form (new or edit), 422 with the errors beside their fields."""
    page = render_template("sessions/form.html", currencies=CURRENCIES, session=session, values=values,
                           errors=errors or {})
    return (page, 422) if errors else page


@bp.route("/sessions/new", methods=["GET", "POST"])
@login_required
def new():
    values: dict[str, Any] = {}
    if request.method == "POST":
        values = from_form(request.form)
        try:
            session = _create(clean_session(values))
        except ValidationFailed as exc:
            return _form(None, values, exc.fields)
        flash(f"Session “{session.name}” created.", "success")
        return redirect(url_for("sessions.show", session_id=session.id))
    return _form(None, values)


@bp.get("/sessions/<int:session_id>")
@login_required
def show(session_id: int):
    session = owned_session(session_id)
    running, limit = current_jobs().share(_uid())
    return render_template("sessions/show.html", s=session, panels=operation_panels(session, _uid()),
                           running=running, max_running=limit)


@bp.route("/sessions/<int:session_id>/edit", methods=["GET", "POST"])
@login_required
def edit(session_id: int):
    session = owned_session(session_id)
    if request.method == "POST":
        values = from_form(request.form)
        try:
            _update(session, clean_session(values))
        except ValidationFailed as exc:
            return _form(session, values, exc.fields)
        flash("Session saved.", "success")
        return redirect(url_for("sessions.show", session_id=session.id))
    values = session_dict(session)
    return _form(session, values)


@bp.route("/sessions/<int:session_id>/delete", methods=["GET", "POST"])
@login_required
def delete(session_id: int):
    session = owned_session(session_id)
    if request.method == "GET":
        return render_template("sessions/delete.html", s=session)
    try:
        _delete(session)
    except Conflict:
        flash("This session has a running job. Cancel the running job first, then delete the session.", "error")
        return redirect(url_for("sessions.show", session_id=session_id))
    flash(f"Session “{session.name}” deleted.", "success")
    return redirect(url_for("sessions.index"))


@bp.post("/sessions/<int:session_id>/start/<operation>")
@login_required
def start_operation(session_id: int, operation: str):
    session = owned_session(session_id)
    try:
        job = _start(session, operation)
    except DuplicateJob as exc:
        flash(f"{exc.job.get('title') or operation} is already running for this session.", "info")
    except EpmError as exc:
        flash(exc.message, "error")
    else:
        flash(f"{job.title} started. You can leave this page; it keeps running.", "success")
    return redirect(url_for("sessions.show", session_id=session_id))
