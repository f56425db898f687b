"""The blueprint ``/api/background-jobs``: the user's jobs as JSON and as event streams."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import BaseModel, Field

from .. import signals
from ..errors import EpmError, Unauthorized, ValidationFailed
from ..extensions import db
from ..request_body import STRICT, parse_body
from .job import Job, JobStatus
from .registry import all_operations, get_operation
from .sse import render, stream

bp = Blueprint("jobs_api", __name__, url_prefix="/api")


class StartJob(BaseModel):
    """Start an operation that needs no strategy session."""

    model_config = STRICT
    job_type: str = Field(min_length=1, max_length=64, description="An operation's name (GET /api/operations).")
    params: dict[str, Any] = Field(default_factory=dict, description="The operation's parameters.")

log = logging.getLogger("epm.sse")

MAX_LIMIT = 100
#: how far a list's ``version`` trails the newest seq it covers: more than the instances' clock skew
SINCE_MARGIN_MS = 500
#: how long an EventSource whose stream could not open waits before it tries again
UNAVAILABLE_RETRY_MS = 5000


def _jobs():
    from .service import current_jobs

    return current_jobs()


def require_user_id(*, starting: bool = False) -> str:
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
    """The user's jobs; with ``since=V`` (a ``version`` this endpoint answered) only those changed since."""
    user_id = require_user_id()
    args = _list_args()
    service = _jobs()
    since = _since_arg(args)
    if since is not None:
        response = _changes_since(service, user_id, since, args)
    else:
        etag = service.list_etag(user_id, request.query_string.decode())
        if etag in request.if_none_match or request.headers.get("If-None-Match") == etag:
            response = Response(status=304)
        else:
            jobs = service.jobs(user_id, **args)
            response = jsonify(jobs=[job.to_dict() for job in jobs], version=_version(jobs, 0))
        response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _since_arg(args: dict[str, Any]) -> int | None:
    raw = request.args.get("since")
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise ValidationFailed("since must be a version this list answered.",
                               {"since": "must be a whole number (the list's version)"})
    if args["status"]:
        # A job leaving the filter (running -> completed) would silently stay on the poller's list.
        raise ValidationFailed("since cannot be combined with status: filter the changed jobs yourself.",
                               {"status": "not allowed with since"})
    return int(raw)


def _changes_since(service, user_id: str, since: int, args: dict[str, Any]) -> Response:
    """The jobs of the user's recent window changed after version ``since``, from Redis alone; 304 if none.

    A job's seq is the millisecond clock of its last write (``next_seq``), so "changed since V" is
    "seq > V". Two round trips for a 304 (the window's ids, their seqs) and no database statement.
    """
    jobs = [job for job in service.changed_since(user_id, since, args["limit"]) if _matches(job, args)]
    if not jobs:
        return Response(status=304)
    return jsonify(jobs=[job.to_dict() for job in jobs], since=since, version=_version(jobs, since))


def _matches(job: Job, args: dict[str, Any]) -> bool:
    return ((args["job_type"] is None or job.job_type == args["job_type"])
            and (args["session_id"] is None or job.session_id == args["session_id"]))


def _version(jobs: list[Job], since: int) -> int:
    """What a poller sends as ``since`` next: the newest seq it was given, held back by ``SINCE_MARGIN_MS``.

    Seqs come from the clocks of the instances that wrote them; holding the version back by more than
    their skew means a write landing on a slower clock right after this answer still counts as newer.
    A change is then sent again for up to the margin (clients drop what is not newer than they hold).
    """
    newest = max((job.seq for job in jobs), default=since)
    return max(since, min(newest, int(time.time() * 1000) - SINCE_MARGIN_MS))


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
    user_id = require_user_id(starting=True)
    body = parse_body(StartJob)
    operation = get_operation(body["job_type"])
    if operation.requires_session:
        raise EpmError(f"{operation.title} runs for a strategy session: POST /api/sessions/<id>/{operation.name}.",
                       code="requires_session")
    job = _jobs().start(operation.name, user_id=user_id, params=body.get("params") or {})
    return start_response(job)


@bp.get("/background-jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return job_response(_jobs().get(job_id, require_user_id()))


@bp.post("/background-jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    return job_response(_jobs().cancel(job_id, require_user_id()), 202)


@bp.post("/background-jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    return start_response(_jobs().retry(job_id, require_user_id(starting=True)))


@bp.post("/background-jobs/<job_id>/acknowledge")
def acknowledge_job(job_id: str) -> Response:
    """Record that the user was told the job finished; ``first`` is true for exactly one caller."""
    first = _jobs().acknowledge(job_id, require_user_id())
    return jsonify(first=first)


def _opening(view):
    """Open at most ``EPM_SSE_OPENING`` event streams of this process at once; the others wait their turn.

    Opening is the costly part of a stream (the session check, SUBSCRIBE, the snapshot: Redis round trips
    on pooled connections); once open, a stream costs a socket and no Redis connection. Thousands of
    browsers reopening at once (a deploy, a Redis restart) would otherwise take a new Redis connection
    each and starve the worker's loop until opens time out.
    """

    @functools.wraps(view)
    def opening(*args: Any, **kwargs: Any) -> Response:
        extensions = current_app.extensions
        gate = extensions.get("epm.sse_opening")
        if gate is None:
            # Made on first use, in the worker (gevent patches threading there, after the app is imported).
            gate = extensions.setdefault("epm.sse_opening",
                                         threading.BoundedSemaphore(current_app.config["EPM_SSE_OPENING"]))
        with gate:
            for attempt in range(OPEN_TRIES):
                try:
                    return view(*args, **kwargs)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    # Opening only reads (the session, the snapshot) and subscribes: safe to do again. A
                    # Redis that is up but slow to answer a starved worker gets another try.
                    if attempt + 1 == OPEN_TRIES:
                        return _not_opened(exc)
                    log.info("event stream: Redis did not answer in time (%s); trying again", exc)
                    time.sleep(0.25 * (attempt + 1))
                except redis.RedisError as exc:
                    return _not_opened(exc)

    return opening


#: times a stream's opening is tried when Redis does not answer in time
OPEN_TRIES = 3


def _not_opened(error: redis.RedisError):
    """An EventSource gets what it understands (``_unavailable``); other clients the API's 503."""
    if request.headers.get("Accept", "").split(";")[0].strip() != "text/event-stream":
        raise error
    response = Response([_unavailable(error)], mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.get("/background-jobs/<job_id>/events")
@_opening
def job_events(job_id: str) -> Response:
    user_id = require_user_id()
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

    # The owner's channel carries every state of the job, as the job's own channel does: one subscription
    # (and one message per event) serves the user's job and user streams in this process alike.
    return _event_stream([service.user_channel(user_id)], snapshot, single_job=True, job_id=job_id)


@bp.get("/background-jobs/events")
@_opening
def user_events() -> Response:
    user_id = require_user_id()
    service = _jobs()

    def snapshot() -> list[Job]:
        return service.recent(user_id)

    return _event_stream([service.user_channel(user_id)], snapshot)


def _event_stream(channels: list[str], snapshot, *, single_job: bool = False, job_id: str | None = None) -> Response:
    last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    try:
        last_event_id = int(last_id) if last_id else None
    except ValueError:
        last_event_id = None
    hub = current_app.extensions["epm.hub"]
    # Redis errors go to ``_opening``: tried again, then a 503 or what an EventSource understands.
    body = stream(hub, channels, snapshot, last_event_id=last_event_id, single_job=single_job,
                  sock=_writable_socket(request.environ), job_id=job_id)
    # The body's bytes are final: the server iterates (and closes) the stream itself, not two wrappers of
    # werkzeug's around it, which an open stream would keep (with their frames) for as long as it is open.
    response = Response(body, mimetype="text/event-stream", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    # werkzeug keeps the request object in the WSGI environ, which the server holds until the response
    # ends: an open stream needs nothing of it.
    request.environ.pop("werkzeug.request", None)
    return response


def _writable_socket(environ: dict[str, Any]):
    """The client's socket when the event hub may write the stream itself, else None (see ``sse.stream``).

    Only gunicorn's gevent worker (``gunicorn.socket`` is a plain gevent socket, not TLS) answering a GET over
    HTTP/1.1, whose body gunicorn sends in chunks as the hub frames them.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None or environ.get("REQUEST_METHOD") != "GET" or environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return None
    try:
        from gevent import socket as gevent_socket
    except ImportError:
        return None
    return sock if type(sock) is gevent_socket.socket else None


def _unavailable(error: redis.RedisError) -> bytes:
    """What an EventSource understands when its stream cannot open: when to come back, and why.

    A browser's EventSource gives up for good on any answer but ``200 text/event-stream``, so it gets
    one: ``retry`` (it reconnects by itself after that many milliseconds), an ``unavailable`` event with
    the API's error body, and the end of the stream. Other clients get the API's 503.
    """
    signals.backend_error.send(error, backend="redis")
    log.error("event stream not opened: Redis unavailable (%s); the browser retries in %d ms", error,
              UNAVAILABLE_RETRY_MS)
    payload = json.dumps({"error": {"code": "redis_unavailable",
                                    "message": "Live updates are paused: job state (Redis) is unavailable. "
                                               "Reconnecting..."}})
    return f"retry: {UNAVAILABLE_RETRY_MS}\n\n".encode() + render(payload, 0, "unavailable")
