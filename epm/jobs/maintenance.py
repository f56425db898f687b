"""Periodic upkeep in every app process: reap dead jobs, flush the outbox, adopt orphaned rows.

Every process runs the loop; a short Redis lock lets one of them do the work at a time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

import redis
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db

if TYPE_CHECKING:
    from flask import Flask

    from .service import JobService

log = logging.getLogger("epm.jobs")


class Maintenance:
    """The reaper, the outbox flusher and orphan adoption, on one timer."""

    def __init__(self, app: Flask, service: JobService):
        self.app = app
        self.service = service
        self.interval = float(app.config["EPM_MAINTENANCE_INTERVAL"])
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, int]:
        """One round of upkeep, whoever holds the lock; returns what was done."""
        with self.app.app_context():
            try:
                adopted = self.service.adopt_orphans()
                reaped = len(self.service.reap())
                flushed = self.service.flush_outbox()
            finally:
                db.session.remove()
        if adopted or reaped or flushed:
            log.info("maintenance: adopted %d, reaped %d, flushed %d", adopted, reaped, flushed)
        return {"adopted": adopted, "reaped": reaped, "flushed": flushed}

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="epm-maintenance")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.service.store.claim_maintenance("upkeep", self.owner, self.interval * 3):
                    self.run_once()
            except (redis.RedisError, SQLAlchemyError) as exc:
                log.warning("maintenance skipped: %s", exc)
            except Exception:
                log.exception("maintenance failed")
