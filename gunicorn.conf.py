"""gunicorn settings for epm: the one config that `make run`, the tests' live servers and the image use.

Every value can be overridden from the environment (``WEB_CONCURRENCY``, ``PORT``/``BIND``, ...).
"""

import glob
import json
import logging
import os
import shutil
import tempfile
import time

worker_class = "gevent"
# One worker on the embedded default: fakeredis lives inside a process, so workers could not share it.
workers = int(os.environ.get("WEB_CONCURRENCY") or (2 if os.environ.get("REDIS_URL") else 1))
worker_connections = int(os.environ.get("EPM_WORKER_CONNECTIONS", "10000"))
# Connections the kernel queues before a worker accepts them (capped by net.core.somaxconn): every tab
# reopening its event stream at once after a deploy must not find the queue full (a dropped SYN is retried
# by the client only after a second or more).
backlog = int(os.environ.get("EPM_BACKLOG", "4096"))
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
# The request id epm puts on its own log lines (epm/logs.py) ends each access line, to join the two.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" request_id=%({x-request-id}o)s'


# -- logs: with LOG_FORMAT=json, gunicorn's own lines are JSON objects too -----------------------------
class _JsonLines(logging.Formatter):
    """gunicorn's lines in the shape of epm's (epm/logs.py, not imported here: the master must not load the
    app's modules before gevent patches the workers)."""

    converter = time.gmtime

    def format(self, record):
        data = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
                "pid": record.process}
        if isinstance(record.args, dict) and record.args.get("{x-request-id}o", "-") != "-":
            data["request_id"] = record.args["{x-request-id}o"]  # an access line: gunicorn's atoms are its args
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


if os.environ.get("LOG_FORMAT", "text").lower() == "json":
    _stream = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    logconfig_dict = {
        "formatters": {"json": {"()": _JsonLines}},
        "handlers": {"stderr": _stream,
                     "access": {**_stream, "stream": "ext://sys.stdout"} if accesslog in (None, "-")
                     else {"class": "logging.FileHandler", "formatter": "json", "filename": accesslog}},
        "root": {"level": "WARNING", "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
                    "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False}},
    }


# -- metrics: prometheus_client's multiprocess mode (epm/metrics.py) ---------------------------------
def _metrics_dir() -> str:
    """The directory where each worker writes its metrics and where a scrape of any worker adds them up.

    One per server: instances on one host must not share it. ``PROMETHEUS_MULTIPROC_DIR`` names it when
    the operator sets it; otherwise a fresh temporary one, removed when the server exits. It is set here,
    when the master reads this file, because prometheus_client reads it once, at its first import: in
    each worker, or in the master for a preloaded app.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    owner = os.environ.get("EPM_METRICS_DIR_OWNER")
    if path and owner in (None, str(os.getpid())):
        return path  # the operator's, or ours read again on a reload (SIGHUP)
    path = tempfile.mkdtemp(prefix="epm-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["EPM_METRICS_DIR_OWNER"] = str(os.getpid())
    return path


metrics_dir = _metrics_dir()
# EPM_LOOP_BLOCK_DEBUG=1: log every greenlet run over 20 ms of CPU with stack samples (a hunt, not production).
loop_block_debug = os.environ.get("EPM_LOOP_BLOCK_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def on_starting(server):
    """Start with an empty metrics directory: values left by an earlier server would be added to ours."""
    os.makedirs(metrics_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(metrics_dir, "*.db")):
        os.remove(stale)


def child_exit(server, worker):
    """A worker is gone: its live gauges (jobs running, streams open) stop counting; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


def on_exit(server):
    """Remove the metrics directory if this server made it."""
    if os.environ.get("EPM_METRICS_DIR_OWNER") == str(os.getpid()):
        shutil.rmtree(metrics_dir, ignore_errors=True)


# -- the job system's part in a worker's life (epm/gunicorn_hooks.py) ---------------------------------
def post_worker_init(worker):
    """Stop gracefully on SIGTERM and at max_requests; run upkeep at once to reconcile what was left.

    Then do the one-time work a first request would otherwise do on the gevent loop (compile the templates,
    freeze the boot heap out of the garbage collector: epm/warmup.py), and start measuring the loop's
    blocks (``epm_event_loop_lag_seconds`` in /metrics). The worker accepts connections after this hook."""
    from epm import gunicorn_hooks, metrics, warmup

    life = gunicorn_hooks.attach(worker)
    if life is not None:
        warmup.warm(life.app)
    metrics.start_loop_monitor(debug=loop_block_debug)


def worker_int(worker):
    """SIGINT/SIGQUIT: a quick stop, so running jobs are recorded as interrupted now."""
    from epm import gunicorn_hooks

    if (life := gunicorn_hooks.lifecycle_of(worker)) is not None:
        life.interrupt_now("quitting")


def worker_abort(worker):
    """SIGABRT after gunicorn's timeout: the worker dies next; record its jobs as interrupted first."""
    from epm import gunicorn_hooks

    if (life := gunicorn_hooks.lifecycle_of(worker)) is not None:
        life.interrupt_now("aborted")


def worker_exit(server, worker):
    """The worker's loop has ended: wait for its jobs to finish or be recorded as interrupted; then write the
    per-event metric increments it still holds (epm/metrics.py, ``_Pending``)."""
    from epm import gunicorn_hooks, metrics

    if (life := gunicorn_hooks.lifecycle_of(worker)) is not None:
        life.begin_shutdown("exiting")
        life.wait()
    metrics.flush_pending()
