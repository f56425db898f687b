"""What an operation sees of its job: ``JobContext``, and the exceptions it may raise or meet.

This is the operation API (re-exported by ``epm.jobs``): operations import it from there, never the
runner's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..concurrency import run_blocking
from ..extensions import db as _db  # at import: an import statement in release_database costs every report
from .job import Job


class OperationError(Exception):
    """A failure whose message is fit to show the user (no traceback, no internals)."""

    def __init__(self, message: str, code: str = "operation_failed"):
        super().__init__(message)
        self.message = message
        self.code = code


class JobCancelled(Exception):
    """Raised inside an operation when the user asked to cancel it."""


class ShuttingDown(Exception):
    """Raised inside an operation when its run ends here before it could finish (the process stops, or
    another process took the job over)."""


class Reporting(Protocol):
    """What a context reports to: the live job (``live.LiveJob``), seen from the operation's side."""

    job: Job

    def report(self, percent: float, message: str | None) -> None: ...
    def checkpoint(self, name: str, value: Any) -> None: ...
    def raise_if_stopped(self) -> None: ...
    def wait_stopped(self, seconds: float) -> None: ...


class JobContext:
    """What an operation sees of its job: its parameters, progress reporting, checkpoints, cancellation.

    Reports only change the job in memory; the job's pulse writes them to Redis (see ``live.LiveJob``).

    Database connections: an operation loads its inputs first (plain data, not ORM objects it will
    use later) and writes its result in one short transaction at the end. Every report (``progress``,
    ``stage``) and every ``run_blocking`` ends the database session the operation had open, returning
    its connection to the pool, so a job that runs for minutes holds no connection while it computes
    or waits: connections follow database work, not running jobs. Anything added and not committed
    before a report is discarded.
    """

    def __init__(self, live: Reporting, params: dict[str, Any], config: dict[str, Any],
                 checkpoints: dict[str, Any] | None = None):
        self._live = live
        self.job_id = live.job.id
        self.user_id = live.job.user_id
        self.session_id = live.job.session_id
        self.attempt = live.job.attempt
        self.params = params
        self.config = config
        self._checkpoints = dict(checkpoints or {})

    def checkpoint(self, name: str, value: Any) -> None:
        """Keep what a stage computed (JSON-able), so that an attempt resuming the job can skip it.

        Best effort and cheap: the pulse writes checkpoints to Redis at most once a second; when Redis
        cannot take one, a resumed attempt simply computes it again.
        """
        self._checkpoints[name] = value
        self._live.checkpoint(name, value)

    def checkpoint_value(self, name: str, default: Any = None) -> Any:
        """What an earlier attempt (or this one) kept under ``name``; ``default`` if nothing."""
        return self._checkpoints.get(name, default)

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0-100) and what is happening; cheap, coalesced to ~10 writes a second."""
        release_database()
        self._live.report(percent, message)

    def check_cancelled(self) -> None:
        """Raise ``JobCancelled`` if the user asked to cancel (``ShuttingDown`` if this run must end)."""
        self._live.raise_if_stopped()

    def stage(self, percent: float, message: str, seconds: float | None = None) -> None:
        """Start a stage: report it, stop here if cancelled, then pace it by ``EPM_STAGE_SECONDS``.

        The pacing stands in for the model calls a production generator makes at each stage, so
        the long-operation experience is real in the demo; it is 0 in tests. The wait ends early
        when the job is cancelled.
        """
        self.progress(percent, message)
        self.check_cancelled()
        pause = float(self.config.get("EPM_STAGE_SECONDS") or 0) if seconds is None else seconds
        if pause > 0:
            self._live.wait_stopped(pause)
            self.check_cancelled()

    def run_blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run CPU-heavy pure computation off the event loop; it must not touch the db, Redis or sockets."""
        release_database()
        return run_blocking(fn, *args, **kwargs)


def release_database() -> None:
    """End this greenlet's database session, if it has one, so its pooled connection goes back at once."""
    session = _db.session
    if session.registry.has():  # most reports find none: skip remove()'s second scope lookup and its KeyError
        session.remove()
