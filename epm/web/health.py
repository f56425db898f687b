"""What load balancers, orchestrators and Prometheus ask: health, readiness, metrics. Unauthenticated and cheap.

``/healthz`` says the process serves (no I/O: restart it when this fails). ``/readyz`` says it can do
its work — Redis and the database answer, and it is not stopping — so a balancer sends it traffic
(take it out of rotation while this fails, do not restart it). ``/metrics`` is the Prometheus
exposition, behind ``METRICS_TOKEN`` when that is set.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text

from .. import metrics, signals
from ..concurrency import under_gevent
from ..errors import Unauthorized
from ..extensions import csrf, db, get_redis
from ..jobs import current_jobs

bp = Blueprint("health", __name__)
csrf.exempt(bp)

log = logging.getLogger("epm.health")


@bp.get("/healthz")
def healthz():
    """The process is up and serving; no I/O."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 when Redis and the database each answer within ``EPM_READY_TIMEOUT``; else 503 naming what failed."""
    timeout = float(current_app.config["EPM_READY_TIMEOUT"])
    checks = {"redis": _check("redis", _ping_redis, timeout),
              "database": _check("database", _select_one, timeout)}
    accepting = current_jobs().accepting
    ready = accepting and all(state == "ok" for state in checks.values())
    status = "ready" if ready else "stopping" if not accepting else "unavailable"
    response = jsonify(status=status, **checks)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def metrics_exposition():
    """Prometheus text format; with ``METRICS_TOKEN`` set, only for ``Authorization: Bearer <token>``."""
    token = current_app.config["METRICS_TOKEN"]
    if token and not _bearer_matches(token):
        error = Unauthorized("Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'.")
        response = jsonify(error.to_dict())
        response.status_code = error.status
        response.headers["WWW-Authenticate"] = 'Bearer realm="epm metrics"'
        return response
    body, content_type = metrics.render(current_jobs(), request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _bearer_matches(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _ping_redis() -> None:
    get_redis().ping()


def _select_one() -> None:
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _check(backend: str, probe: Callable[[], None], timeout: float) -> str:
    """``ok``, ``timeout`` or ``down``; a failure is logged and counted like any backend error."""
    try:
        _within(timeout, probe)
    except (TimeoutError, redis.TimeoutError) as exc:
        signals.backend_error.send(exc, backend=backend)
        log.warning("readyz: %s did not answer within %.1fs", backend, timeout)
        return "timeout"
    except Exception as exc:
        signals.backend_error.send(exc, backend=backend)
        log.warning("readyz: %s is down: %s", backend, exc)
        return "down"
    return "ok"


def _within(seconds: float, probe: Callable[[], None]) -> None:
    """Run ``probe``, giving up after ``seconds`` under gevent (the server); elsewhere the clients' own
    timeouts bound it (``EPM_REDIS_TIMEOUT``, ``EPM_DB_CONNECT_TIMEOUT``)."""
    if not under_gevent():
        probe()
        return
    import gevent

    # gevent.Timeout is a BaseException: redis-py and SQLAlchemy discard a connection it cut off mid-query.
    try:
        with gevent.Timeout(seconds):
            probe()
    except gevent.Timeout:
        raise TimeoutError(f"no answer within {seconds}s") from None
