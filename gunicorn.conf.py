"""gunicorn settings for epm: the one config that `make run`, the tests' live servers and the image use.

Every value can be overridden from the environment (``WEB_CONCURRENCY``, ``PORT``/``BIND``, ...).
"""

import os

worker_class = "gevent"
# One worker on the embedded default: fakeredis lives inside a process, so workers could not share it.
workers = int(os.environ.get("WEB_CONCURRENCY") or (2 if os.environ.get("REDIS_URL") else 1))
worker_connections = int(os.environ.get("EPM_WORKER_CONNECTIONS", "10000"))
bind = os.environ.get("BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Seconds a stopping worker gives running jobs to finish before marking them interrupted.
graceful_timeout = int(os.environ.get("EPM_GRACEFUL_TIMEOUT", "30"))
timeout = int(os.environ.get("EPM_WORKER_TIMEOUT", "60"))
keepalive = 75
max_requests = int(os.environ.get("EPM_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("EPM_ACCESS_LOG") or None
errorlog = "-"
# gunicorn's control socket has one default path per user, which several instances on one host would
# fight over; epm is managed through signals and `flask jobs`, so it is off.
control_socket_disable = True
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


# -- the job system's part in a worker's life (epm/jobs/lifecycle.py) ---------------------------------
def post_worker_init(worker):
    """Stop gracefully on SIGTERM and at max_requests; run upkeep at once to reconcile what was left."""
    from epm.jobs import lifecycle

    lifecycle.attach(worker)


def worker_int(worker):
    """SIGINT/SIGQUIT: a quick stop, so running jobs are recorded as interrupted now."""
    from epm.jobs import lifecycle

    if (life := lifecycle.lifecycle_of(worker)) is not None:
        life.interrupt_now("quitting")


def worker_abort(worker):
    """SIGABRT after gunicorn's timeout: the worker dies next; record its jobs as interrupted first."""
    from epm.jobs import lifecycle

    if (life := lifecycle.lifecycle_of(worker)) is not None:
        life.interrupt_now("aborted")


def worker_exit(server, worker):
    """The worker's loop has ended: wait for its jobs to finish or be recorded as interrupted."""
    from epm.jobs import lifecycle

    if (life := lifecycle.lifecycle_of(worker)) is not None:
        life.begin_shutdown("exiting")
        life.wait()
