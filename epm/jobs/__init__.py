"""The job system: long operations as tracked jobs, live in Redis, durable in PostgreSQL.

It knows nothing of EPM programs, canvases or research: operations register themselves with
``epm.jobs.registry.operation``, and the host app tells it who the current user is.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app

from ..extensions import init_redis
from .maintenance import Maintenance
from .service import JobService
from .sse import EventHub
from .store import JobStore


def init_app(app: Flask, current_user_id: Callable[[], str | None]) -> JobService:
    """Set up the job system on ``app``; ``current_user_id`` names the signed-in user (or None)."""
    from . import api, cli

    client = app.extensions.get("redis") or init_redis(app)
    store = JobStore(client, prefix=app.config["EPM_KEY_PREFIX"],
                     retention=int(app.config["EPM_RETENTION_SECONDS"]),
                     keep_per_user=int(app.config["EPM_USER_JOBS_KEEP"]),
                     heartbeat_timeout=float(app.config["EPM_HEARTBEAT_TIMEOUT"]))
    service = JobService(app, store)
    app.extensions["epm.jobs"] = service
    app.extensions["epm.hub"] = EventHub(client, heartbeat=float(app.config["EPM_SSE_HEARTBEAT"]),
                                         health_check=float(app.config["EPM_PUBSUB_HEALTH_CHECK"]))
    app.extensions["epm.user_id"] = current_user_id
    app.extensions["epm.maintenance"] = Maintenance(app, service)
    app.register_blueprint(api.bp)
    app.cli.add_command(cli.jobs_cli)
    return service


def current_jobs() -> JobService:
    return current_app.extensions["epm.jobs"]
