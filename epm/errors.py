"""Errors that carry a code and a message fit to show a user.

Raised anywhere, mapped to an HTTP answer once, in the handlers ``create_app`` registers:
JSON ``{"error": {"code", "message"}}`` under ``/api/``, a readable page elsewhere.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any


class EpmError(Exception):
    """Base of every error whose message is safe to show a user."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return {"error": body}


class NotFound(EpmError):
    status = 404
    code = "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str):
        super().__init__(f"There is no job {job_id!r}.")


class ValidationFailed(EpmError):
    """Bad input; ``fields`` maps a field name to what is wrong with it."""

    status = 422
    code = "validation_failed"

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message, details={"fields": fields} if fields else None)
        self.fields = fields or {}


class Conflict(EpmError):
    status = 409
    code = "conflict"


class DuplicateJob(Conflict):
    """The same operation is already active for the same session."""

    code = "duplicate_job"

    def __init__(self, job: dict[str, Any]):
        super().__init__(f"{job.get('title') or job.get('job_type')} is already running for this session.",
                         details={"job": job})
        self.job = job


class TooManyRunning(EpmError):
    """The account already runs as many jobs as one account may at once (``EPM_MAX_RUNNING_PER_USER``)."""

    status = 429
    code = "too_many_running"

    def __init__(self, limit: int, running: list[dict[str, Any]]):
        super().__init__(f"You already have {limit} jobs running, the most one account can run at once. "
                         "Wait for one to finish, or cancel one, then start this again.",
                         details={"limit": limit, "running": running})
        self.limit = limit
        self.running = running


class BackendDown(EpmError):
    """Redis or the database cannot be reached; the request may be retried later."""

    status = 503
    code = "backend_unavailable"


class Unauthorized(EpmError):
    status = 401
    code = "unauthorized"


def answer(error: EpmError):
    """The HTTP answer for ``error``: JSON under /api/ (or when asked for), a readable page elsewhere."""
    from flask import current_app, jsonify, render_template, request

    if error.status == 503 and request.headers.get("Accept", "").split(";")[0].strip() == "text/event-stream":
        return event_stream_unavailable(error)
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        response = jsonify(error.to_dict())
        response.status_code = error.status
    else:
        response = current_app.make_response((render_template("error.html", error=error), error.status))
    if error.status == 503:
        response.headers["Retry-After"] = "5"
    return response


#: milliseconds a browser's EventSource waits before it reconnects after an outage answer
UNAVAILABLE_RETRY_MS = 5000


def event_stream_unavailable(error: EpmError):
    """An outage told to a browser's EventSource in the one answer it does not give up on.

    An EventSource closes for good on any answer but ``200 text/event-stream``, so an outage (Redis
    away while the stream opens, or while the request is signed in) gets one: ``retry`` (it reconnects
    by itself after that many milliseconds), an ``unavailable`` event carrying the API's error JSON,
    then the end of the stream. Clients that ask for JSON get the plain 503.
    """
    import json

    from flask import Response

    body = (f"retry: {UNAVAILABLE_RETRY_MS}\n\nevent: unavailable\n"
            f"data: {json.dumps(error.to_dict(), separators=(',', ':'))}\n\n")
    return Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


def is_outage(error: Exception) -> bool:
    """True when a database error means the database cannot be reached, not that the data was refused.

    Only connection-level failures count: an ``OperationalError`` (connection refused or lost, server
    shutting down), a pool timeout, a lost connection. A ``DataError``, ``IntegrityError`` or a value
    the driver cannot encode is the request's own fault.
    """
    from sqlalchemy import exc

    return isinstance(error, exc.OperationalError | exc.TimeoutError | exc.DisconnectionError
                      | exc.InterfaceError)


def init_app(app) -> None:
    """Answer every error once: JSON under /api/, a readable page elsewhere; tracebacks only in the log."""
    import logging

    import redis
    from flask import request
    from sqlalchemy.exc import SQLAlchemyError
    from werkzeug.exceptions import HTTPException

    log = logging.getLogger("epm")

    @app.errorhandler(EpmError)
    def on_epm_error(error: EpmError):
        return answer(error)

    @app.errorhandler(HTTPException)
    def on_http_error(error: HTTPException):
        if error.code == 400 and "CSRF" in (error.description or ""):
            return answer(EpmError("The form expired or the CSRF token is missing; reload the page and "
                                   "try again.", code="csrf_failed", status=400))
        code = (error.name or "error").lower().replace(" ", "_")
        limit = app.config.get("MAX_CONTENT_LENGTH") or 0
        message = {404: "There is nothing at this address.",
                   405: f"This address does not accept {request.method}.",
                   413: f"The request is larger than the {limit // 1024:,} KB this server accepts."
                   }.get(error.code, error.description)
        response = app.make_response(answer(EpmError(message, code=code, status=error.code or 500)))
        if error.code == 405:
            response.headers["Allow"] = ", ".join(error.valid_methods or [])
        return response

    @app.errorhandler(redis.RedisError)
    def on_redis_error(error: redis.RedisError):
        from . import signals

        if not isinstance(error, redis.ConnectionError | redis.TimeoutError):
            # A command Redis refused (a wrong type, a script error) is a bug, not an outage.
            return on_unexpected(error)

        signals.backend_error.send(error, backend="redis")
        log.error("Redis unavailable: %s", error)
        return answer(BackendDown("Live job state (Redis) is unavailable right now; try again in a moment.",
                                  code="redis_unavailable"))

    @app.errorhandler(SQLAlchemyError)
    def on_database_error(error: SQLAlchemyError):
        from . import signals
        from .extensions import db

        db.session.rollback()
        if not is_outage(error):
            # The request carried something the database refuses (an id out of range, a value it cannot
            # store): the client's mistake, answered as such, and no sign that the database is down.
            log.warning("database refused the request's data on %s %s: %s", request.method, request.path,
                        str(getattr(error, "orig", None) or error).splitlines()[0])
            return answer(EpmError("The request carries a value that cannot be stored or looked up "
                                   "(a number out of range, or characters that are not allowed).",
                                   code="invalid_value", status=400))
        signals.backend_error.send(error, backend="database")
        log.error("database error: %s", error)
        return answer(BackendDown("The database is unavailable right now; try again in a moment.",
                                  code="database_unavailable"))

    @app.errorhandler(RecursionError)
    def on_too_deep(_error: RecursionError):
        return answer(EpmError("The request is nested too deeply.", code="too_deeply_nested", status=400))

    @app.errorhandler(Exception)
    def on_unexpected(error: Exception):
        from .extensions import db

        # A failed transaction left open would make the next query of this request (a log field,
        # the error page) fail too, and turn this answer into a bare 500.
        with suppress(Exception):
            db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return answer(EpmError("Something went wrong on our side. It was logged; please try again.",
                               code="internal_error", status=500))
