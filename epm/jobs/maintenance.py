"""Periodic upkeep in every app process: reconcile, adopt orphaned rows, reap dead jobs, flush the outbox.

Every process runs the loop; a short Redis lock lets one of them do the work at a time. Each task
stands alone, so a database outage does not stop the reaper and a Redis outage does not stop the
rest from trying again next round.

The process holding the lock also wakes when the earliest heartbeat deadline in ``jobs:active`` passes
(one ``ZRANGEBYSCORE … LIMIT 1`` per wake tells it when) and reaps then, so a dead worker's job is taken
over about ``EPM_HEARTBEAT_TIMEOUT`` after its last heartbeat rather than up to a whole upkeep interval
later. Live runners push their deadlines forward every second, so these wakes happen only for a job that
really went silent.
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
#: a deadline wake comes this long after the deadline (the reaper takes only deadlines already passed)
DEADLINE_SLACK = 0.02
#: the shortest wait between two wakes of the loop
MIN_WAIT = 0.01


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

    def reap_once(self) -> int:
        """The reaper alone (a deadline passed between two rounds); returns the jobs it handled."""
        if time.monotonic() < self._reap_after:
            return 0
        done = {"resumed": 0}
        with self.app.app_context():
            try:
                reaped = self._attempt("reaped", lambda: self._reap(done))
            finally:
                db.session.remove()
        if reaped:
            log.info("maintenance: reaped %d (resumed %d) at their deadline", reaped, done["resumed"])
        return reaped

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
        wait = self.interval
        next_round = 0.0  # monotonic time of the next whole round
        while True:
            self._wake.wait(wait)
            kicked = self._wake.is_set()
            self._wake.clear()
            if self._stop.is_set():
                return
            wait = self.interval
            try:
                if not self.service.store.claim_maintenance(LOCK, self.owner, self.interval * 3):
                    next_round = 0.0  # whoever holds the lock does the rounds; a whole one first if it comes here
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
                # The reaper below takes the deadlines passed by now; one passing while it works is woken for.
                checked = time.time()
                if kicked or time.monotonic() >= next_round:
                    self.run_once()
                    next_round = time.monotonic() + self.interval
                else:
                    self.reap_once()
                wait = self._until_next(next_round, checked)
            except Exception:
                log.exception("maintenance failed")

    def _until_next(self, next_round: float, checked: float) -> float:
        """Seconds until the next whole round or the earliest heartbeat deadline after ``checked`` (when the
        reaper last looked), whichever is first: at once for a deadline that passed while the reaper worked."""
        wait = next_round - time.monotonic()
        try:
            deadline = self.service.store.next_deadline(checked)
        except redis.RedisError:
            deadline = None  # the next round says so
        if deadline is not None:
            wait = min(wait, deadline - time.time() + DEADLINE_SLACK)
        return max(MIN_WAIT, wait)
