"""The job system: long operations as tracked jobs, live in Redis, durable in PostgreSQL.

It knows nothing of EPM programs, canvases or research. This package's names are its two faces:

- the **operation API**, what an operation imports: ``operation`` (register a function as a job type),
  ``JobContext`` (what the function gets), ``OperationError`` (a failure fit to show the user) and
  ``run_blocking``;
- the **app's**: ``init_app`` (the host app says who the signed-in user is) and ``current_jobs()``,
  the ``JobService`` through which pages, the API and the CLI act on jobs.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from ..concurrency import run_blocking
from ..extensions import init_redis
from .context import JobContext, OperationError
from .registry import operation
from .service import JobService, current_jobs
from .sse import EventHub
from .store import JobStore

__all__ = ["JobContext", "JobService", "OperationError", "current_jobs", "init_app", "operation", "run_blocking"]


def init_app(app: Flask, current_user_id: Callable[[], str | None]) -> JobService:
    """Set up the job system on ``app``; ``current_user_id`` names the signed-in user (or None)."""
    from . import api, cli

    client = app.extensions.get("redis") or init_redis(app)
    store = JobStore(client, prefix=app.config["EPM_KEY_PREFIX"],
                     retention=int(app.config["EPM_RETENTION_SECONDS"]),
                     keep_per_user=int(app.config["EPM_USER_JOBS_KEEP"]),
                     heartbeat_timeout=float(app.config["EPM_HEARTBEAT_TIMEOUT"]),
                     linger=float(app.config["EPM_WRITE_LINGER"]))
    service = JobService(app, store)
    app.extensions["epm.jobs"] = service
    app.extensions["epm.hub"] = EventHub(client, heartbeat=float(app.config["EPM_SSE_HEARTBEAT"]),
                                         health_check=float(app.config["EPM_PUBSUB_HEALTH_CHECK"]),
                                         most_handed_over=int(app.config["EPM_STREAMS_PER_WORKER"]))
    app.extensions["epm.user_id"] = current_user_id
    app.extensions["epm.upkeep"] = service.upkeep
    app.register_blueprint(api.bp)
    app.cli.add_command(cli.jobs_cli)
    return service
