"""Periodic upkeep in every app process: reconcile, adopt orphaned rows, reap dead jobs, flush the outbox.

Every process runs the loop; a short Redis lock lets one of them do the work at a time. Each task
stands alone, so a database outage does not stop the reaper and a Redis outage does not stop the
rest from trying again next round.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from . import signals

if TYPE_CHECKING:
    from flask import Flask

    from .service import JobService

log = logging.getLogger("epm.jobs")

LOCK = "upkeep"


class Maintenance:
    """Reconciliation after Redis lost its data, orphan adoption, the reaper and the outbox flusher, on one timer."""

    def __init__(self, app: Flask, service: JobService):
        self.app = app
        self.service = service
        self.interval = float(app.config["EPM_MAINTENANCE_INTERVAL"])
        # After Redis was unreachable, live runners need a few heartbeats to push their deadlines
        # forward again; reaping before that would end jobs that are in fact running.
        self.settle = 3 * service.runner.heartbeat_every
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._reap_after = 0.0
        self._redis_lost = False
        self._failing: set[str] = set()

    def run_once(self) -> dict[str, int]:
        """One round of upkeep, whoever holds the lock; returns what was done."""
        service = self.service
        tasks: list[tuple[str, Callable[[], int]]] = [
            ("reconciled", service.reconcile_lost_data),
            ("adopted", service.adopt_orphans),
            ("reaped", lambda: self._reap(done)),
            ("flushed", service.flush_outbox),
        ]
        if time.monotonic() < self._reap_after:
            tasks = [task for task in tasks if task[0] != "reaped"]
        done = {name: 0 for name in ("reconciled", "adopted", "reaped", "resumed", "flushed")}
        with self.app.app_context():
            try:
                for name, task in tasks:
                    done[name] = self._attempt(name, task)
            finally:
                db.session.remove()
        if any(done.values()):
            log.info("maintenance: %s", ", ".join(f"{name} {count}" for name, count in done.items()))
        return done

    def _reap(self, done: dict[str, int]) -> int:
        """Reap; count the jobs resumed here apart from those ended (``reaped`` counts both)."""
        handled = self.service.reap()
        done["resumed"] = sum(1 for job in handled if not job.is_terminal)
        return len(handled)

    def _attempt(self, name: str, task: Callable[[], int]) -> int:
        try:
            count = task()
        except (redis.RedisError, SQLAlchemyError) as exc:
            db.session.rollback()
            signals.backend_error.send(exc, backend="redis" if isinstance(exc, redis.RedisError) else "database")
            if isinstance(exc, redis.RedisError):
                self._redis_lost = True
            if name not in self._failing:
                log.warning("maintenance: %s skipped until its backend is back: %s", name, exc)
                self._failing.add(name)
            return 0
        if name in self._failing:
            log.info("maintenance: %s works again", name)
            self._failing.discard(name)
        return count

    def start(self) -> None:
        """Run the loop in the background; the first round comes after one interval, or at ``kick``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="epm-maintenance")
            self._thread.start()

    def kick(self) -> None:
        """Run a round now (a server process starting: reconcile what the last one left behind)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the loop and hand the lock to another process at once."""
        self._stop.set()
        self._wake.set()
        try:
            self.service.store.release_maintenance(LOCK, self.owner)
        except redis.RedisError as exc:
            log.info("maintenance: lock not released (%s); it expires by itself", exc)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if not self.service.store.claim_maintenance(LOCK, self.owner, self.interval * 3):
                    continue
            except redis.RedisError as exc:
                if not self._redis_lost:
                    log.warning("maintenance: Redis unavailable (%s); waiting for it", exc)
                self._redis_lost = True
                continue
            if self._redis_lost:
                self._redis_lost = False
                self._reap_after = time.monotonic() + self.settle
                log.info("maintenance: Redis is back; reaping resumes in %.1fs", self.settle)
            try:
                self.run_once()
            except Exception:
                log.exception("maintenance failed")
