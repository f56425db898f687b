"""Logging: one line per event, JSON when ``LOG_FORMAT=json``, with job, user and request ids attached.

A record gets ``job_id``, ``job_type`` and ``user_id`` from its ``extra=`` (``job_fields(job)``) or,
inside a running job, from ``job_context``; ``request_id`` from the request it was logged in (the
``X-Request-ID`` header when a proxy sent one, else a fresh id, echoed in the response).
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol

from flask import Flask, g, has_request_context, request


class Job(Protocol):
    """What a log line says of a job (``epm.jobs.job.Job`` has it; the logs know nothing more of jobs)."""

    id: str
    job_type: str
    user_id: str


_CONTEXT_FIELDS = ("job_id", "job_type", "user_id", "request_id")
# The job whose runner logs in this thread (greenlet, under gevent): its fields go on every record.
_current_job: ContextVar[dict[str, str] | None] = ContextVar("epm_job", default=None)
# A request id from a proxy is taken as it is, within reason: printable and short.
_MAX_REQUEST_ID = 64


def job_fields(job: Job) -> dict[str, str]:
    """The ``extra=`` of a log call about ``job``."""
    return {"job_id": job.id, "job_type": job.job_type, "user_id": job.user_id}


@contextmanager
def job_context(job: Job) -> Iterator[None]:
    """Attach ``job``'s fields to every record logged in this thread until the block ends (an operation's too)."""
    token = _current_job.set(job_fields(job))
    try:
        yield
    finally:
        _current_job.reset(token)


class _ContextFilter(logging.Filter):
    """Fills the context fields a record was not given: the running job's, the request's, the signed-in user's."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _current_job.get()
        if job is not None:
            for name, value in job.items():
                if not getattr(record, name, None):
                    setattr(record, name, value)
        if has_request_context():
            if not getattr(record, "request_id", None):
                record.request_id = getattr(g, "request_id", None)
            if not getattr(record, "user_id", None):
                record.user_id = _signed_in_user_id()
        return True


def _signed_in_user_id() -> str | None:
    # Only a user Flask-Login already loaded for this request: a log line must not cost a query.
    user = g.get("_login_user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.get_id())


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is a field of it, so a failure stays one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                data[name] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(f"{n}={getattr(record, n)}" for n in _CONTEXT_FIELDS if getattr(record, n, None))
        if not tags:
            return line
        # The tags go on the message's line, before any traceback that follows it.
        first, newline, rest = line.partition("\n")
        return f"{first} [{tags}]{newline}{rest}"


def init_app(app: Flask) -> None:
    log_format = str(app.config["LOG_FORMAT"]).lower()
    if log_format not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, got {app.config['LOG_FORMAT']!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    logger = logging.getLogger("epm")
    for old in list(logger.handlers):
        if getattr(old, "_epm", False):
            logger.removeHandler(old)
    handler._epm = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(app.config["LOG_LEVEL"])
    logger.propagate = False

    @app.before_request
    def assign_request_id() -> None:
        given = request.headers.get("X-Request-ID", "")
        usable = 0 < len(given) <= _MAX_REQUEST_ID and given.isprintable()
        g.request_id = given if usable else uuid.uuid4().hex[:16]

    @app.after_request
    def echo_request_id(response):
        if has_request_context() and getattr(g, "request_id", None):
            response.headers.setdefault("X-Request-ID", g.request_id)
        return response
