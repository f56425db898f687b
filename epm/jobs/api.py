"""The blueprint ``/api/background-jobs``: the user's jobs as JSON and as event streams."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from ..api_schema import StartJob, parse_body
from ..errors import EpmError, Unauthorized, ValidationFailed
from ..extensions import db
from .job import Job, JobStatus
from .registry import all_operations, get_operation
from .sse import stream

bp = Blueprint("jobs_api", __name__, url_prefix="/api")

MAX_LIMIT = 100


def _jobs():
    from . import current_jobs

    return current_jobs()


def current_user_id(*, starting: bool = False) -> str:
    """The signed-in user's id, as the job system keys it; 401 when nobody is signed in.

    ``starting``: the host app also checks that the account still exists (when it says how).
    """
    extensions = current_app.extensions
    lookup = extensions["epm.user_id"]
    if starting:
        lookup = extensions.get("epm.existing_user_id", lookup)
    user_id = lookup()
    if user_id is None:
        raise Unauthorized("Sign in to see your jobs.")
    return str(user_id)


def job_response(job: Job, status: int = 200) -> Response:
    response = jsonify(job=job.to_dict())
    response.status_code = status
    return response


def start_response(job: Job) -> Response:
    """202 with the new job and where to follow it."""
    response = job_response(job, 202)
    response.headers["Location"] = url_for("jobs_api.get_job", job_id=job.id)
    return response


@bp.get("/operations")
def list_operations() -> Response:
    return jsonify(operations=[op.to_dict() for op in all_operations()])


@bp.get("/background-jobs")
def list_jobs() -> Response:
    user_id = current_user_id()
    args = _list_args()
    service = _jobs()
    etag = service.list_etag(user_id, request.query_string.decode())
    if etag in request.if_none_match or request.headers.get("If-None-Match") == etag:
        response = Response(status=304)
    else:
        jobs = service.list(user_id, **args)
        response = jsonify(jobs=[job.to_dict() for job in jobs])
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _list_args() -> dict[str, Any]:
    errors = {}
    raw_limit = request.args.get("limit", "20")
    try:
        limit = int(raw_limit)
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError
    except ValueError:
        errors["limit"] = f"must be a whole number from 1 to {MAX_LIMIT}"
        limit = 20
    status = request.args.get("status") or None
    if status and status not in {s.value for s in JobStatus}:
        errors["status"] = "must be one of " + ", ".join(s.value for s in JobStatus)
    job_type = request.args.get("job_type") or None
    if job_type and job_type not in {op.name for op in all_operations()}:
        errors["job_type"] = "must be one of " + ", ".join(op.name for op in all_operations())
    if errors:
        raise ValidationFailed("Some filters are not valid.", errors)
    return {"limit": limit, "status": status, "job_type": job_type,
            "session_id": request.args.get("session_id") or None}


@bp.post("/background-jobs")
def start_job() -> Response:
    """Start an operation that needs no strategy session (those start from their session)."""
    user_id = current_user_id(starting=True)
    body = parse_body(StartJob)
    operation = get_operation(body["job_type"])
    if operation.requires_session:
        raise EpmError(f"{operation.title} runs for a strategy session: POST /api/sessions/<id>/{operation.name}.",
                       code="requires_session")
    job = _jobs().start(operation.name, user_id=user_id, params=body.get("params") or {})
    return start_response(job)


@bp.get("/background-jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return job_response(_jobs().get(job_id, current_user_id()))


@bp.post("/background-jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    return job_response(_jobs().cancel(job_id, current_user_id()), 202)


@bp.post("/background-jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    return start_response(_jobs().retry(job_id, current_user_id(starting=True)))


@bp.post("/background-jobs/<job_id>/acknowledge")
def acknowledge_job(job_id: str) -> Response:
    """Record that the user was told the job finished; ``first`` is true for exactly one caller."""
    first = _jobs().acknowledge(job_id, current_user_id())
    return jsonify(first=first)


@bp.get("/background-jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    user_id = current_user_id()
    service = _jobs()
    service.get(job_id, user_id)  # 404 before the stream opens

    app = current_app._get_current_object()

    def snapshot() -> list[Job]:
        # Outside the request by now: its own app context, and no database connection kept
        # for the life of the stream.
        with app.app_context():
            try:
                return [service.get(job_id, user_id)]
            finally:
                db.session.remove()

    return _event_stream([service.store.job_channel(job_id)], snapshot, single_job=True)


@bp.get("/background-jobs/events")
def user_events() -> Response:
    user_id = current_user_id()
    service = _jobs()

    def snapshot() -> list[Job]:
        return service.recent(user_id)

    return _event_stream([service.store.user_channel(user_id)], snapshot)


def _event_stream(channels: list[str], snapshot, *, single_job: bool = False) -> Response:
    last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    try:
        last_event_id = int(last_id) if last_id else None
    except ValueError:
        last_event_id = None
    hub = current_app.extensions["epm.hub"]
    body = stream(hub, channels, snapshot, heartbeat=float(current_app.config["EPM_SSE_HEARTBEAT"]),
                  last_event_id=last_event_id, single_job=single_job)
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
