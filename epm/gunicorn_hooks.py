"""gunicorn's worker hooks for the job system: upkeep when a worker starts, a graceful stop when it goes.

gunicorn.conf.py calls these from its worker hooks. A worker told to stop — SIGTERM from the arbiter
(a deploy, a scale-down) or its own ``max_requests`` — stops taking jobs at once, ends its event
streams (browsers reconnect to another worker), lets running jobs finish within the grace and
hands the rest over to be resumed by another process (or records them as interrupted when they may
not be resumed); the process waits for that before it exits. A worker stopped hard (SIGINT/SIGQUIT,
or SIGABRT after gunicorn's timeout) does the same on the spot. Only ``kill -9`` leaves them to the
reaper, which resumes them once their heartbeat lapses.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask

from .concurrency import under_gevent

log = logging.getLogger("epm.jobs")


class WorkerLifecycle:
    """Stops the job system of one worker process, once, however the stop was asked for."""

    def __init__(self, app: Flask, grace: float):
        self.app = app
        self.grace = grace
        self.stopping = False
        self.idle_waits: _IdleWaits | None = None
        self._done = threading.Event()

    def begin_shutdown(self, reason: str) -> None:
        """Start the graceful stop in the background (safe from a signal handler); idempotent."""
        if self.stopping:
            return
        self.stopping = True
        _spawn(self._shutdown, reason)

    def _shutdown(self, reason: str) -> None:
        try:
            log.info("worker stopping (%s): no new jobs; running ones get %.1fs to finish", reason, self.grace)
            self._close_streams()
            interrupted = self.app.extensions["epm.jobs"].stop(self.grace)
            if interrupted:
                log.warning("worker stopping: %d job(s) had to be told to stop: %s", len(interrupted),
                            ", ".join(interrupted))
            self.app.extensions["epm.upkeep"].stop()
        except Exception:
            log.exception("worker stopping: job shutdown failed")
        finally:
            self._done.set()

    def interrupt_now(self, reason: str) -> None:
        """Hand every running job over (or record it as interrupted) at once: the process ends right after."""
        self.stopping = True
        try:
            self._close_streams()
            interrupted = self.app.extensions["epm.jobs"].stop(0)
            if interrupted:
                log.warning("worker %s: %d job(s) interrupted: %s", reason, len(interrupted), ", ".join(interrupted))
            self.app.extensions["epm.upkeep"].stop()
        except Exception:
            log.exception("worker %s: could not record running jobs as interrupted; the reaper will", reason)
        finally:
            self._done.set()

    def wait(self) -> bool:
        """Block until the stop is done (at most the grace and a little); True if it finished."""
        return self._done.wait(self.grace + 3.0)

    def _close_streams(self) -> None:
        """End the event streams and idle connections: what keeps a stopping worker from leaving."""
        self.app.extensions["epm.hub"].close()
        if self.idle_waits is not None:
            self.idle_waits.end()


def attach(worker: Any) -> WorkerLifecycle | None:
    """Tie the job system to a freshly booted gunicorn worker (the ``post_worker_init`` hook)."""
    app = _flask_app(worker)
    if app is None:
        log.warning("post_worker_init: no epm app on worker %s; jobs will not stop gracefully", worker)
        return None
    graceful = float(worker.cfg.graceful_timeout)
    # The margin covers recording the interrupted jobs and the process exit before gunicorn's SIGKILL.
    life = WorkerLifecycle(app, grace=max(0.0, graceful - max(1.0, min(5.0, graceful * 0.2))))
    app.extensions["epm.lifecycle"] = life

    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)  # gunicorn's: stop accepting connections, drain
        life.begin_shutdown("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: do not break system calls in flight
    _spawn(_watch_alive, worker, life)
    if under_gevent() and hasattr(worker, "timeout_ctx"):
        life.idle_waits = _IdleWaits(worker.timeout_ctx)
        worker.timeout_ctx = life.idle_waits.wait

    upkeep = app.extensions["epm.upkeep"]
    if app.config["EPM_MAINTENANCE"]:
        upkeep.start()
        upkeep.kick()  # reconcile now what a previous process left behind
    return life


def _watch_alive(worker: Any, life: WorkerLifecycle) -> None:
    """Notice gunicorn stopping the worker without a signal: ``max_requests`` reached (or SIGQUIT)."""
    # gunicorn only flips ``worker.alive`` and offers no hook for it, so look a few times a second.
    while worker.alive and not life.stopping:
        time.sleep(0.2)
    if worker.max_requests and worker.nr >= worker.max_requests:
        life.begin_shutdown(f"max_requests reached ({worker.nr} requests)")
    else:
        life.begin_shutdown("worker stopping")


class _IdleWaits:
    """Ends a stopping gevent worker's waits for a next request on idle keep-alive connections.

    A stopping worker lives on until all its connections are closed, and gunicorn keeps an idle
    one open for ``keepalive`` seconds (browsers keep theirs): each would hold the worker — and with
    a single worker, the next one's start — until gunicorn's graceful timeout. A connection still
    waiting for its first request is left alone: its request is answered (and the connection closed).
    """

    def __init__(self, original: Callable[[], Any]):
        self.original = original
        self.waiting: dict[Any, Any] = {}  # the Timeout of each idle wait -> the connection's greenlet
        self.served: weakref.WeakSet = weakref.WeakSet()  # connections (greenlets) past their first request
        self.stopping = False

    @contextmanager
    def wait(self) -> Iterator[None]:
        import gevent

        greenlet = gevent.getcurrent()
        idle = greenlet in self.served
        self.served.add(greenlet)
        if not idle:
            with self.original():
                yield
            return
        timeout = gevent.Timeout(0.5, False) if self.stopping else self.original()
        self.waiting[timeout] = greenlet
        try:
            with timeout:
                yield
        finally:
            self.waiting.pop(timeout, None)

    def end(self) -> None:
        import gevent

        self.stopping = True
        loop = gevent.get_hub().loop
        for timeout, greenlet in list(self.waiting.items()):
            loop.run_callback(self._expire, timeout, greenlet)

    def _expire(self, timeout: Any, greenlet: Any) -> None:
        if self.waiting.get(timeout) is greenlet:  # still idle: end the wait as if it had timed out
            timeout.cancel()
            greenlet.throw(timeout)


def lifecycle_of(worker: Any) -> WorkerLifecycle | None:
    app = _flask_app(worker)
    return app.extensions.get("epm.lifecycle") if app is not None else None


def _flask_app(worker: Any) -> Flask | None:
    app = getattr(worker, "wsgi", None)
    for _ in range(3):  # through a WSGI middleware or two that keep the app as ``.app``
        if isinstance(app, Flask):
            return app if "epm.jobs" in app.extensions else None
        app = getattr(app, "app", None)
    return None


def _spawn(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn`` in the background; under gevent a greenlet, which a signal handler may start."""
    if under_gevent():
        import gevent

        gevent.spawn(fn, *args)
    else:
        threading.Thread(target=fn, args=args, daemon=True).start()
