"""A running job as its runner holds it: one phase with named transitions, and its pulse.

The operation only changes the job in memory (``report``, ``checkpoint``). The pulse, a small loop
beside it, is the one writer to Redis for the job: the running state, progress (coalesced to one write
per ``EPM_PROGRESS_INTERVAL``), checkpoints (at most once a second), the heartbeat on its own timer
(noticing cancel requests), and the terminal state. Whatever the operation's thread, the pulse and the
runner share is read and changed under ``lock``.

    RUNNING ──cancel──▶ CANCELLING ──┐
       │ └────stop────▶ STOPPING ────┼──end──▶ ENDING ──written (or given up)──▶ ENDED
       └──────────lose / release─────┴───────────┴──refused──▶ LOST

``LOST``: a reaper ended the job or another process resumed it (its heartbeat had lapsed), or this
process handed it over while stopping. Nothing more is written; the operation stops at its next check.
"""

from __future__ import annotations

import logging
import threading
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis

from .. import signals
from ..logs import job_fields
from . import steps
from .context import JobCancelled, ShuttingDown
from .job import RESUMED_MESSAGE, Job, JobStatus, iso, iso_now, next_seq, utcnow
from .store import WRITTEN, Guard

if TYPE_CHECKING:
    from .store import JobStore

log = logging.getLogger("epm.jobs")


class Phase(StrEnum):
    RUNNING = "running"
    CANCELLING = "cancelling"
    STOPPING = "stopping"
    ENDING = "ending"
    ENDED = "ended"
    LOST = "lost"


#: The phases in which the operation still runs and its state may change.
LIVE = frozenset({Phase.RUNNING, Phase.CANCELLING, Phase.STOPPING})

# What the pulse writes next: the whole state (a status change, a write-back) or the progress fields.
_WHOLE, _PROGRESS = "whole", "progress"

# Seconds between two writes of a job's checkpoints.
CHECKPOINT_EVERY = 1.0
# How long a terminal state that Redis cannot take is tried again (in the pulse, with backoff).
END_PATIENCE = 3600.0


class LiveJob:
    """One running job: its state (``job``), its ``phase`` and the pulse that writes them."""

    def __init__(self, job: Job, store: JobStore, interval: float, heartbeat_every: float,
                 checkpoints: dict[str, Any] | None = None):
        self.job = job
        self.store = store
        self.interval = interval
        self.heartbeat_every = heartbeat_every
        self.lock = threading.RLock()
        self.phase = Phase.RUNNING
        # Set once the phase left RUNNING: a stage's pacing wait ends early.
        self.stopped = threading.Event()
        self._wake = threading.Event()
        self._pending: str | None = None
        # Every checkpoint's last value (those a resumed attempt began with too), and the names of those not
        # yet in Redis: all of them again after Redis lost the job's hash.
        self._kept: dict[str, Any] = dict(checkpoints or {})
        self._unsaved: set[str] = set()
        self._patient = True
        self._pulse: threading.Thread | None = None
        # The pulse tried the first write (the running state) / the terminal write once.
        self._began = threading.Event()
        self._tried_end = threading.Event()
        self.end_saved = False
        # Whether the database has the terminal state (the runner says, after recording it).
        self._recorded: bool | None = None
        self._recorded_known = threading.Event()
        # The pulse's own, touched by no other thread.
        self._last_write = 0.0
        self._last_checkpoint = 0.0
        self._last_heard = time.monotonic()  # when Redis last took a write or a heartbeat
        self._redis_failing = False
        # When the sleeping pulse wakes by itself (monotonic; under ``lock``): a report wakes it only when
        # its write is due before that.
        self._wakes_at = 0.0
        # The timeline whose step names were last read, and those names (``_step_names``).
        self._named: tuple[dict[str, Any] | None, frozenset[str]] = (None, frozenset())

    # -- transitions (lock held) -------------------------------------------------------------------
    def _move(self, to: Phase, allowed: frozenset[Phase] | set[Phase]) -> bool:
        if self.phase not in allowed:
            return False
        self.phase = to
        self.stopped.set()
        self._wake.set()
        return True

    def cancel(self) -> bool:
        """The user asked to stop: the operation ends as cancelled at its next check."""
        with self.lock:
            return self._move(Phase.CANCELLING, {Phase.RUNNING})

    def stop(self) -> bool:
        """The process stops: the operation ends at its next check (handed over, or interrupted)."""
        with self.lock:
            return self._move(Phase.STOPPING, {Phase.RUNNING})

    def release(self) -> bool:
        """Give the job up for another process to resume: write nothing more; False if it already ended."""
        with self.lock:
            return self._move(Phase.LOST, LIVE)

    def lose(self) -> None:
        """A reaper ended the job or another process resumed it: stop the operation, write nothing more."""
        with self.lock:
            if self._move(Phase.LOST, LIVE | {Phase.ENDING}):
                log.warning("job %s: ended or resumed elsewhere by the reaper while still running here (Redis "
                            "last heard from this run %.1fs ago); stopping it", self.job.id,
                            time.monotonic() - self._last_heard, extra=job_fields(self.job))

    def end(self, status: JobStatus, *, message: str, error_code: str | None = None, error: str | None = None,
            result: dict[str, Any] | None = None, patient: bool = True, completed_at: str | None = None) -> bool:
        """Set the terminal state and have the pulse write it; True if this run's ending counts.

        False when the job already ended or was lost (a reaper's or another process's state stands).
        Returns once the pulse tried the write (``end_saved`` says whether Redis took it). ``patient``:
        if Redis cannot take it, the pulse tries again for up to an hour; a stopping process cannot wait
        (the reaper then ends the job from its lapsed heartbeat).
        """
        with self.lock:
            if self.phase not in LIVE:
                return False
            job = self.job
            job.status = status
            if status is JobStatus.COMPLETED:
                job.progress = 100
            job.message = message
            job.error_code = error_code
            job.error = error
            job.result = result
            job.cancel_requested = False
            job.completed_at = completed_at or iso(utcnow())
            steps.finish(job)
            self._patient = patient
            self._pending = _WHOLE
            self._move(Phase.ENDING, LIVE)
        self.start_pulse()
        self._tried_end.wait()
        return self.phase is not Phase.LOST

    def recorded(self, in_database: bool) -> None:
        """The runner recorded the terminal state (or queued it in the outbox): for a late Redis write."""
        self._recorded = in_database
        self._recorded_known.set()

    # -- called from the operation -------------------------------------------------------------------
    def begin(self, timeout: float = 5.0) -> None:
        """The job runs: the pulse writes the running state before the operation starts."""
        with self.lock:
            self._pending = _WHOLE
        self._wake.set()
        self.start_pulse()
        self._began.wait(timeout)

    def report(self, percent: float, message: str | None) -> None:
        with self.lock:
            if self.phase not in LIVE:
                return  # a late report from the operation changes nothing
            pct = max(0, min(100, int(percent)))
            stepped = message in self._step_names() and steps.advance(self.job, message)
            if message is not None and self.job.attempt > 1:
                message = f"{message} ({RESUMED_MESSAGE.lower()})"  # the user sees why it starts over
            if not stepped and pct == self.job.progress and (message is None or message == self.job.message):
                return
            self.job.progress = pct
            if message is not None:
                self.job.message = message
            if stepped:
                self._pending = _WHOLE  # a new step: the timeline is written with the whole state, at once
                self._wake.set()
            elif self._pending is None:
                self._pending = _PROGRESS
                if self._last_write + self.interval < self._wakes_at:
                    self._wake.set()

    def _step_names(self) -> frozenset[str]:
        """The names of the job's declared steps (a report that names none changes no step: most do not)."""
        timeline = self.job.timeline
        if timeline is not self._named[0]:
            self._named = (timeline, frozenset(step["name"] for step in timeline["steps"]) if timeline else frozenset())
        return self._named[1]

    def checkpoint(self, name: str, value: Any) -> None:
        with self.lock:
            self._kept[name] = value
            self._unsaved.add(name)
        if time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY:
            self._wake.set()  # the first in a second is written at once

    def raise_if_stopped(self) -> None:
        phase = self.phase
        if phase is Phase.CANCELLING:
            raise JobCancelled()
        if phase is not Phase.RUNNING:
            raise ShuttingDown()

    def wait_stopped(self, seconds: float) -> None:
        self.stopped.wait(seconds)

    # -- the pulse ------------------------------------------------------------------------------------
    def start_pulse(self) -> None:
        with self.lock:
            if self._pulse is None:
                self._pulse = threading.Thread(target=self._run_pulse, daemon=True, name=f"pulse-{self.job.id}")
                self._pulse.start()

    def _run_pulse(self) -> None:
        try:
            self._pulse_loop()
        finally:
            self._began.set()
            self._tried_end.set()

    def _pulse_loop(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_every
        give_up = None
        delay = 0.5
        eager = False
        while True:
            with self.lock:
                phase, pending = self.phase, self._pending
            if phase in (Phase.LOST, Phase.ENDED):
                return
            now = time.monotonic()
            if phase is Phase.ENDING:
                if self._write_end():
                    return
                give_up = give_up or now + END_PATIENCE
                if not self._patient or now >= give_up:
                    self._gave_up()
                    return
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            # While Redis fails, the whole state is tried again at the progress pace, not in a spin.
            due_write = now if pending is _WHOLE and not self._redis_failing else self._last_write + self.interval
            if pending is not None and now >= due_write:
                self._write()
                self._began.set()
                continue
            eager = eager or pending is _PROGRESS  # a report waits for the pace: reports outrun it
            if now >= next_beat:
                next_beat = now + self.heartbeat_every
                self._beat()
            if self._unsaved and now - self._last_checkpoint >= CHECKPOINT_EVERY and self._pending is not _WHOLE:
                self._write_checkpoints(now)  # after a whole write due first: Redis may have lost the hash
            due = next_beat if pending is None else min(next_beat, due_write)
            if eager and pending is None:
                # Reports come faster than the pace: wake when the next write may go, so that the next
                # report need not wake the pulse (one wake per write, not two); until one is late.
                next_write = self._last_write + self.interval
                if next_write > now:
                    due = min(due, next_write)
                else:
                    eager = False
            if self._unsaved:
                due = min(due, self._last_checkpoint + CHECKPOINT_EVERY)
            with self.lock:
                if self._pending is not pending or self.phase is not phase:
                    continue  # changed since it was read: plan again
                self._wakes_at = due
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()

    def abandon(self) -> None:
        """The run ended without a terminal state (a bug, logged by the runner): stop the pulse, so the
        heartbeat lapses and the reaper ends or resumes the job."""
        with self.lock:
            self._move(Phase.LOST, LIVE)

    def _write(self) -> bool:
        """Write what is pending; False when Redis is unreachable (logged) or the job was lost."""
        with self.lock:
            kind = _WHOLE if self._redis_failing else (self._pending or _WHOLE)
            self._pending = None
            job = self.job
            job.seq = next_seq(job.seq)
            job.updated_at = iso_now()
            started = self._last_write = time.monotonic()
            try:
                if kind is _PROGRESS:
                    written = self.store.save_progress(job)
                else:
                    written = self.store.write(job, Guard.RUNNER) == WRITTEN
            except redis.RedisError as exc:
                # Keep working: the next write sends the whole state again, so nothing is lost.
                if not self._redis_failing:
                    signals.backend_error.send(exc, backend="redis")
                    log.warning("job %s: Redis write failed (%s); the job goes on and re-writes its state "
                                "when Redis is back", job.id, exc, extra=job_fields(job))
                self._redis_failing = True
                self._pending = _WHOLE
                return False
            if not written:
                self.lose()  # Redis holds a terminal state or a newer attempt: a reaper ended the job
                return False
            self._last_heard = started
            if self._redis_failing:
                log.info("job %s: Redis is back; full state re-written", job.id, extra=job_fields(job))
                self._redis_failing = False
        signals.job_saved.send(job)
        return True

    def _write_end(self) -> bool:
        """One try of the terminal write; True when there is nothing more to do."""
        first = not self._tried_end.is_set()
        written = self._write()
        if first:
            self.end_saved = written
            self._tried_end.set()
        if self.phase is Phase.LOST:
            return True
        if not written:
            return False
        if not first:
            # Back after Redis was away: the hash gets its retention TTL if the database has the state,
            # or the job goes to the outbox if neither could take it before.
            self._recorded_known.wait()
            try:
                if self._recorded:
                    self.store.expire(self.job.id)
                else:
                    self.store.outbox_add(self.job.id)
            except redis.RedisError as exc:
                log.warning("job %s: terminal state back in Redis, but %s failed (%s)", self.job.id,
                            "its expiry" if self._recorded else "queueing it for the database", exc,
                            extra=job_fields(self.job))
        with self.lock:
            self._move(Phase.ENDED, {Phase.ENDING})
        return True

    def _gave_up(self) -> None:
        with self.lock:
            self._move(Phase.ENDED, {Phase.ENDING})
        if self._patient:
            log.error("job %s: gave up writing its terminal state to Redis after an hour", self.job.id,
                      extra=job_fields(self.job))

    def _write_checkpoints(self, now: float) -> None:
        with self.lock:
            unsaved, self._unsaved = self._unsaved, set()
            values = {name: self._kept[name] for name in unsaved}
        self._last_checkpoint = now
        try:
            kept = self.store.checkpoint(self.job.id, values)
        except redis.RedisError as exc:
            log.info("job %s: checkpoints not kept yet (%s)", self.job.id, exc, extra=job_fields(self.job))
            kept = False
        if not kept:
            # Redis failed, or lost the job's hash (the heartbeat has the whole job written back): keep them
            # for the next try (with any value the operation set since).
            with self.lock:
                self._unsaved |= unsaved

    def _beat(self) -> None:
        started = time.monotonic()
        try:
            beat = self.store.heartbeat(self.job)
        except redis.RedisError as exc:
            if not self._redis_failing:
                log.warning("job %s: heartbeat failed (%s); the job goes on", self.job.id, exc,
                            extra=job_fields(self.job))
            self._redis_failing = True
            with self.lock:
                self._pending = _WHOLE
            return
        if (beat.status is not None and beat.status.is_terminal) or (beat.attempt or 0) > self.job.attempt:
            self.lose()
            return
        self._last_heard = started
        if not beat.whole or self._redis_failing:
            # Redis lost the job or part of it (restart without persistence, FLUSHALL, a failover to a
            # lagging replica) or was away: write it all back, its duplicate-start lock and checkpoints
            # included.
            with self.lock:
                self._pending = _WHOLE
                self._unsaved = set(self._kept)
        if beat.cancel:
            self.cancel()
