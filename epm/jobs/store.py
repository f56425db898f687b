"""JobStore: the live state of jobs in Redis. Every Redis key and channel name is built here.

The key contract (prefix ``EPM_KEY_PREFIX``, default ``epm:``) is documented for operators in
docs/operations.md; keep the two in step.
"""

from __future__ import annotations

import json
import json.encoder
import logging
import math
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from enum import StrEnum
from typing import Any, NamedTuple

import redis

from .job import (
    TERMINAL,
    Job,
    JobStatus,
    elapsed,
    iso,
    left_plan,
    next_seq,
    parse_epoch,
    parse_iso,
    plan_left,
    sent_fields,
    utcnow,
)
from .lane import Lane

TERMINAL_VALUES = frozenset(status.value for status in TERMINAL)

log = logging.getLogger("epm.jobs")

_ORPHAN_TRIES = 5
_CHECKPOINT = "checkpoint:"


class Guard(StrEnum):
    """When ``JobStore.write`` may write a job's whole state."""

    #: the job's own runner: not over a terminal state, nor over a newer attempt (resumed elsewhere)
    RUNNER = "runner"
    #: a job nobody runs (reaper, cancel, resume): not over a terminal state, only if its seq is the one
    #: read and, when asked, its heartbeat deadline has passed
    ORPHAN = "orphan"
    #: the durable record: whatever Redis holds
    RECORD = "record"
    #: a new job, or a finished one put back: only where Redis holds no job under its id (no hash, or
    #: only what a cancel request left after Redis lost the job)
    MISSING = "missing"


#: What ``JobStore.write`` did.
WRITTEN, REFUSED, CHANGED = 1, 0, -1


class Beat(NamedTuple):
    """What a heartbeat learnt about a live job (see ``JobStore.heartbeat``)."""

    cancel: bool
    status: JobStatus | None
    attempt: int | None
    whole: bool


class JobStore:
    """Reads and writes job state in Redis; one ``save`` is one round trip."""

    def __init__(self, client: redis.Redis, *, prefix: str = "epm:", retention: int = 86400,
                 keep_per_user: int = 200, heartbeat_timeout: float = 30.0, linger: float = 0.0):
        self.redis = client
        self.prefix = prefix
        self.retention = retention
        self.keep_per_user = keep_per_user
        self.heartbeat_timeout = heartbeat_timeout
        # Loaded once per server and called by its SHA (loaded again after a SCRIPT FLUSH or a restart).
        self._progress_script = client.register_script(_PROGRESS_LUA)
        self._write_script = client.register_script(_WRITE_LUA)
        self._hand_over_script = client.register_script(_HAND_OVER)
        self._heartbeat_script = client.register_script(_HEARTBEAT_LUA)
        self._checkpoint_script = client.register_script(_CHECKPOINT_LUA)
        self._cancel_script = client.register_script(_CANCEL_LUA)
        self._payloads = ProgressPayloads()
        self._lane = Lane.for_client(client, linger)
        self._call = self._lane.execute if self._lane is not None else client.execute_command
        #: a command packed by the caller, on the lane (the progress write's; None without a lane)
        self._send = self._lane.send if self._lane is not None else None

    # -- names ---------------------------------------------------------------------------------
    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def active_key(self) -> str:
        return f"{self.prefix}jobs:active"

    def user_jobs_key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:jobs"

    def user_version_key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:version"

    def lock_key(self, user_id: str, session_id: str | None, job_type: str) -> str:
        return f"{self.prefix}lock:{user_id}:{session_id or '-'}:{job_type}"

    @property
    def outbox_key(self) -> str:
        return f"{self.prefix}outbox"

    @property
    def dead_letter_key(self) -> str:
        return f"{self.prefix}outbox:dead"

    def user_auth_key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:auth"

    def job_channel(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def user_channel(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def maintenance_lock_key(self, name: str) -> str:
        return f"{self.prefix}maintenance:{name}"

    def user_running_key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:running"

    def history_key(self, job_type: str) -> str:
        """Everyone's recent completed runs of an operation: their durations, for estimates (steps.py)."""
        return f"{self.prefix}history:{job_type}"

    def user_history_key(self, user_id: str, job_type: str) -> str:
        return f"{self.prefix}user:{user_id}:history:{job_type}"

    # -- writing -------------------------------------------------------------------------------
    def deadline(self) -> float:
        return time.time() + self.heartbeat_timeout

    def write(self, job: Job, guard: Guard, *, expected_seq: str | None = None,
              overdue_before: float | None = None, publish: bool = True, ttl: int = 0,
              extra: dict[str, str] | None = None, client=None) -> int:
        """Write the job's whole state if ``guard`` allows: the one way a job's state goes to Redis whole.

        Every status change and every terminal state, from whoever writes it (the job's runner, a
        reaper, a cancel with no runner, reconciliation, the durable record put back), is this one Lua
        script, keyed on the job alone: the check and the write are atomic. It sets the hash's fields
        (deleting those that are unset), the heartbeat deadline (or, at a terminal state, drops the job
        from the active set, its account's share and its cancel flag), the user index and version, the
        duplicate-start lock a live job owns, and publishes the state on both channels.

        Returns ``WRITTEN`` (1), ``REFUSED`` (0: the guard said no) or ``CHANGED`` (-1: an orphan's seq
        moved since it was read; read again). ``extra`` adds hash fields (a new job's parameters);
        ``ttl`` gives a terminal hash its expiry; ``client`` may be a pipeline (the reply is then the
        pipeline's).
        """
        self._payloads.forget(job.id)  # the whole state changes: the next report's template is made anew
        write, delete = job.to_hash()
        if extra:
            write.update(extra)
        flat = [item for pair in write.items() for item in pair]
        payload = job.to_json() if publish else ""
        now = time.time()
        args = [job.id, guard.value, expected_seq or "", "" if overdue_before is None else repr(overdue_before),
                job.attempt, "1" if job.is_terminal else "0", repr(now + self.heartbeat_timeout), repr(now),
                repr(_created_score(job)), self.keep_per_user, payload, ttl, len(flat), *flat, len(delete), *delete]
        keys = [self.job_key(job.id), self.active_key, self.user_jobs_key(job.user_id),
                self.user_version_key(job.user_id), self.lock_key(job.user_id, job.session_id, job.job_type),
                self.user_running_key(job.user_id), self.job_channel(job.id), self.user_channel(job.user_id)]
        outcome = self._write_script(keys=keys, args=args, client=client)
        return outcome if client is None else 0

    def save_progress(self, job: Job) -> bool:
        """A progress report of a live job: one ``EVALSHA`` of a script loaded once (the hot path).

        The script writes the fields a report changes (progress, message, seq, updated_at), bumps the
        user's version and publishes the whole state on both channels, atomically. It never writes a
        terminal state: when Redis holds one for the job, or a newer attempt (the job was resumed
        elsewhere), it writes nothing and says False. When Redis lost the job's hash it writes nothing and
        the whole state is written instead (``write``), so a hash is never left in parts. The heartbeat
        deadline is the pulse's (``heartbeat``, every second), not a report's.
        """
        if self._send is not None:
            outcome = self._loaded(self._progress_script, lambda: self._send(self.progress_command(job, time.time())))
        else:
            outcome = self._evalsha(self._progress_script, 2, *self._progress_keys(job), self._payloads.render(job),
                                    job.progress, job.message or "", job.seq, job.updated_at or "", job.attempt)
        if outcome == _PROGRESS_LOST:
            return self.write(job, Guard.RUNNER) == WRITTEN
        return outcome != _PROGRESS_ENDED

    def _progress_keys(self, job: Job) -> tuple[str, str, str, str]:
        """The progress script's keys (the job's hash, its user's version) and channels (the job's, the user's)."""
        return (self.job_key(job.id), self.user_version_key(job.user_id), self.job_channel(job.id),
                self.user_channel(job.user_id))

    def progress_command(self, job: Job, now: float) -> bytes:
        """The progress script's ``EVALSHA`` for ``job``'s report at ``now``, packed as redis-py would pack it;
        its head (the SHA, the keys and the channels) packed once per job and SHA."""
        script = self._progress_script
        template = self._payloads.template(job)
        if template.sha != script.sha:
            template.head = b"*13\r\n" + _packed("EVALSHA", script.sha, 2, *self._progress_keys(job))
            template.sha = script.sha
        return template.command(job, now)

    def _evalsha(self, script, *args: Any) -> Any:
        """A hot path's script by its SHA, on the lane (no redis-py layers; see lane.py)."""
        return self._loaded(script, lambda: self._call("EVALSHA", script.sha, *args))

    def _loaded(self, script, call: Callable[[], Any]) -> Any:
        """``call()``, which runs ``script`` by its SHA; once more after loading it if Redis lost its scripts (a
        restart, SCRIPT FLUSH)."""
        try:
            return call()
        except redis.exceptions.NoScriptError:
            script.sha = self.redis.script_load(script.script)
            return call()

    def heartbeat(self, job: Job) -> Beat:
        """Push the job's deadline forward (only while it is active). One ``EVALSHA`` on the lane.

        Says whether a cancel was requested, the status and attempt Redis holds, and whether Redis
        holds everything the live job owns (its hash, its place in its user's index, its
        duplicate-start lock, its place in its account's share): when not (a restart without
        persistence, FLUSHALL, a failover to a replica that lagged), the runner writes it all again.
        A terminal status the runner did not write means a reaper ended the job; a newer attempt,
        that another process resumed it.
        """
        keys = (self.active_key, self.job_key(job.id), self.user_jobs_key(job.user_id),
                self.lock_key(job.user_id, job.session_id, job.job_type), self.user_running_key(job.user_id))
        flag, status, attempt, whole = self._evalsha(self._heartbeat_script, 5, *keys, job.id, self.deadline())
        return Beat(cancel=flag == "1", status=JobStatus(status) if status else None,
                    attempt=int(attempt) if attempt else None, whole=bool(status) and whole == 1)

    def request_cancel(self, job_id: str) -> None:
        """Flag the job for its runner, wherever it runs. Where Redis lost the job's hash this leaves one
        with the flag alone, which readers do not take for a job; the runner sees the flag at its next
        heartbeat, and writes the job back around it (a running job's write makes the hash lasting again).
        Such a hash expires after the retention period, so that a flag no runner came back for does not
        stay for ever."""
        self._cancel_script(keys=[self.job_key(job_id)], args=[self.retention])

    def cancel_requested(self, job_id: str) -> bool:
        return self.redis.hget(self.job_key(job_id), "cancel_requested") == "1"

    def expire(self, job_id: str) -> None:
        """Let a finished job's hash go after the retention period (its record is in the database)."""
        self.redis.expire(self.job_key(job_id), self.retention)

    def bump_version(self, user_id: str) -> None:
        self.redis.incr(self.user_version_key(user_id))

    # -- the duplicate-start lock --------------------------------------------------------------
    def acquire_lock(self, job: Job) -> str | None:
        """Take the lock of ``job``'s (user, session, type); return the id of the job holding it, if any."""
        key = self.lock_key(job.user_id, job.session_id, job.job_type)
        for _ in range(3):
            if self.redis.set(key, job.id, nx=True):
                return None
            holder = self.redis.get(key)
            if holder:
                return holder
        return self.redis.get(key)

    def release_lock(self, job: Job) -> None:
        """Drop the lock if ``job`` still holds it (a newer job's lock is left alone)."""
        key = self.lock_key(job.user_id, job.session_id, job.job_type)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != job.id:
                    return
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
            except redis.WatchError:
                return

    # -- the per-account share ---------------------------------------------------------------
    def admit(self, job: Job, limit: int, *, settle: float = 60.0) -> list[str]:
        """Count ``job`` among its user's active jobs if fewer than ``limit`` are; else return theirs.

        ``user:{uid}:running`` is a zset of the user's active job ids (score: when admitted). Members
        whose hash says terminal, or that have no hash ``settle`` seconds after admission (expired,
        or a start that never got written), are dropped as they are found, so a crashed worker or an
        outbox wait never holds a place. The check and the add are one WATCHed transaction: parallel
        starts of one account cannot pass the limit together. Returns ``[]`` when admitted.
        """
        key = self.user_running_key(job.user_id)
        while True:
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    active, stale = self._share(pipe.zrange(key, 0, -1, withscores=True), settle)
                    if len(active) >= limit:
                        if stale:
                            pipe.multi()
                            pipe.zrem(key, *stale)
                            pipe.execute()
                        return active
                    pipe.multi()
                    if stale:
                        pipe.zrem(key, *stale)
                    pipe.zadd(key, {job.id: time.time()})
                    pipe.execute()
                    return []
                except redis.WatchError:
                    continue

    def running_ids(self, user_id: str, *, settle: float = 60.0) -> list[str]:
        """The user's jobs that count against their share now (what ``admit`` would count), read only."""
        return self._share(self.redis.zrange(self.user_running_key(user_id), 0, -1, withscores=True), settle)[0]

    def _share(self, members: list[tuple[str, float]], settle: float) -> tuple[list[str], list[str]]:
        """Split a share's (job id, admitted) members into (active, stale) by their hashes' status."""
        if not members:
            return [], []
        reads = self.redis.pipeline(transaction=False)
        for job_id, _ in members:
            reads.hget(self.job_key(job_id), "status")
        now = time.time()
        active, stale = [], []
        for (job_id, admitted), status in zip(members, reads.execute(), strict=True):
            gone = status in TERMINAL_VALUES or (status is None and now - admitted > settle)
            (stale if gone else active).append(job_id)
        return active, stale

    def leave(self, job: Job) -> None:
        """``job`` no longer counts among its user's active jobs."""
        self.redis.zrem(self.user_running_key(job.user_id), job.id)

    # -- reading -------------------------------------------------------------------------------
    def load(self, job_id: str) -> Job | None:
        return _job_or_none(self.redis.hgetall(self.job_key(job_id)))

    def load_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        ids = list(job_ids)
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        return {job_id: job for job_id, data in zip(ids, pipe.execute(), strict=True)
                if (job := _job_or_none(data)) is not None}

    def seqs(self, job_ids: Iterable[str]) -> dict[str, int]:
        """The seq of each job's last write (jobs whose hash is gone are left out). One round trip."""
        ids = list(job_ids)
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.job_key(job_id), "seq")
        return {job_id: int(seq) for job_id, seq in zip(ids, pipe.execute(), strict=True) if seq is not None}

    def recent_ids(self, user_id: str, limit: int = 50) -> list[str]:
        return self.redis.zrevrange(self.user_jobs_key(user_id), 0, limit - 1)

    def user_version(self, user_id: str) -> int:
        return int(self.redis.get(self.user_version_key(user_id)) or 0)

    def active_ids(self) -> dict[str, float]:
        return dict(self.redis.zrange(self.active_key, 0, -1, withscores=True))

    def overdue_ids(self, now: float | None = None) -> list[str]:
        return self.redis.zrangebyscore(self.active_key, "-inf", now if now is not None else time.time())

    def next_deadline(self, after: float | None = None) -> float | None:
        """The earliest heartbeat deadline later than ``after`` (unix s; default now), or None: when the reaper
        may next have work, unless that job's runner beats first. One ZRANGEBYSCORE with LIMIT 1."""
        found = self.redis.zrangebyscore(self.active_key, f"({after if after is not None else time.time()!r}", "+inf",
                                         start=0, num=1, withscores=True)
        return float(found[0][1]) if found else None

    def inspect(self, job_id: str) -> dict[str, Any]:
        """Everything Redis holds about one job, for an operator: its hash, the hash's TTL, its heartbeat
        deadline and whether it waits in the outbox. One round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.job_key(job_id))
        pipe.ttl(self.job_key(job_id))
        pipe.zscore(self.active_key, job_id)
        pipe.zscore(self.outbox_key, job_id)
        data, ttl, deadline, queued = pipe.execute()
        return {"key": self.job_key(job_id), "hash": data, "ttl": ttl if ttl >= 0 else None,
                "deadline": deadline, "in_outbox": queued is not None}

    def queue_stats(self, now: float | None = None) -> dict[str, int]:
        """Sizes of the shared queues: jobs in the active set, those overdue, the outbox. One round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.active_key)
        pipe.zcount(self.active_key, "-inf", now if now is not None else time.time())
        pipe.zcard(self.outbox_key)
        active, overdue, outbox = pipe.execute()
        return {"active": active, "overdue": overdue, "outbox": outbox}

    # -- a job whose runner is gone -------------------------------------------------------------
    def give_deadline(self, job_id: str) -> None:
        """Give a job a heartbeat deadline if it has none, so the reaper ends it unless a runner is alive."""
        self.redis.zadd(self.active_key, {job_id: self.deadline()}, nx=True)

    def take_over(self, job_id: str, change, *, require_overdue: bool = True,
                  fallback: Job | None = None) -> Job | None:
        """Write ``change(job)`` for a job nobody runs (ended, or resumed here); the job, or None.

        ``write`` with ``Guard.ORPHAN``: only if the job is not terminal, its seq is the one read (no
        runner wrote since) and, with ``require_overdue``, its heartbeat deadline has passed. A
        runner's heartbeat elsewhere therefore never makes the write fail, however many jobs run; a
        write that lost a race is tried again at once. ``fallback`` is the job as the database knows
        it, used when Redis has lost the job's hash.
        """
        for _ in range(_ORPHAN_TRIES):
            data = self.redis.hgetall(self.job_key(job_id))
            live = _job_or_none(data)
            if live is None and fallback is None:
                self.redis.zrem(self.active_key, job_id)
                return None
            job = live or fallback
            if job.is_terminal:
                if live is None:
                    # Redis lost a job that had finished: show it as finished again, stop watching it.
                    self.write(job, Guard.MISSING, ttl=self.retention)
                else:
                    self.redis.zrem(self.active_key, job_id)
                return None
            expected = data.get("seq", "")  # "" for no hash, or one a cancel request left (no seq either)
            job = change(job)
            job.seq = next_seq(job.seq)
            outcome = self.write(job, Guard.ORPHAN, expected_seq=expected,
                                 overdue_before=time.time() if require_overdue else None)
            if outcome == WRITTEN:
                return job
            if outcome == REFUSED:
                return None
            log.info("job %s: changed while being taken over as orphaned; looking again", job_id)
        log.warning("job %s: still changing after %d tries to take it over; left for the next round", job_id,
                    _ORPHAN_TRIES)
        return None

    def hand_over(self, job: Job) -> bool:
        """Leave a live job for another process to resume: its deadline passes now. One round trip.

        Only while Redis holds this runner's attempt of the job, not terminal; False otherwise.
        """
        return bool(self._hand_over_script(keys=[self.job_key(job.id), self.active_key],
                                          args=[job.id, job.attempt]))

    def save_new(self, job: Job, params: dict[str, Any]) -> None:
        """Write a job just created, with the parameters a process resuming it will need."""
        self.write(job, Guard.MISSING,
                   extra={"params": json.dumps(params, separators=(",", ":"), default=str)})

    def params(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.job_key(job_id), "params")
        return json.loads(raw) if raw else None

    def checkpoint(self, job_id: str, values: dict[str, Any]) -> bool:
        """Keep what the stages computed, for an attempt that resumes the job. One ``EVALSHA`` on the lane
        (the pulse's, once a second). False, writing nothing, where Redis holds no job under that id (it
        lost the hash): the runner writes the whole job back first, then these again."""
        if not values:
            return True
        fields = [item for name, value in values.items()
                  for item in (_CHECKPOINT + name, json.dumps(value, separators=(",", ":"), default=str))]
        return self._evalsha(self._checkpoint_script, 1, self.job_key(job_id), *fields) == 1

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        data = self.redis.hgetall(self.job_key(job_id))
        return {name[len(_CHECKPOINT):]: json.loads(raw) for name, raw in data.items()
                if name.startswith(_CHECKPOINT)}

    # -- the outbox of terminal states not yet in the database ---------------------------------
    def outbox_add(self, job_id: str) -> None:
        self.redis.zadd(self.outbox_key, {job_id: time.time()}, nx=True)

    def outbox_ids(self, limit: int = 100) -> list[str]:
        return self.redis.zrange(self.outbox_key, 0, limit - 1)

    def outbox_remove(self, job_id: str) -> None:
        self.redis.zrem(self.outbox_key, job_id)

    def outbox_depth(self) -> int:
        return self.redis.zcard(self.outbox_key)

    def dead_letter(self, job_id: str, reason: str) -> None:
        """Move ``job_id`` from the outbox to the dead letters, with why the database refused it."""
        pipe = self.redis.pipeline()
        pipe.hset(self.dead_letter_key, job_id, json.dumps({"reason": reason, "at": time.time()}))
        pipe.zrem(self.outbox_key, job_id)
        pipe.execute()

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        """Job id -> ``{"reason", "at"}`` of every terminal state the database refused for its data."""
        return {job_id: json.loads(raw) for job_id, raw in self.redis.hgetall(self.dead_letter_key).items()}

    def dead_letter_count(self) -> int:
        return self.redis.hlen(self.dead_letter_key)

    def dead_letter_remove(self, job_id: str) -> None:
        self.redis.hdel(self.dead_letter_key, job_id)

    # -- purging finished jobs ----------------------------------------------------------------
    def purge(self, jobs: Iterable[tuple[str, str]]) -> int:
        """Remove finished jobs, given as ``(job id, user id)``, from Redis: their hashes, their places in
        their users' indexes and in the outbox; each user's version is bumped. Returns the hashes deleted.

        Only for jobs whose records are deleted too: a job still active must never be passed here.
        """
        jobs = list(jobs)
        if not jobs:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for job_id, user_id in jobs:
            pipe.delete(self.job_key(job_id))
            pipe.zrem(self.user_jobs_key(user_id), job_id)
            pipe.zrem(self.outbox_key, job_id)
        for user_id in {user_id for _, user_id in jobs}:
            pipe.incr(self.user_version_key(user_id))
        results = pipe.execute()
        return sum(results[0:3 * len(jobs):3])

    # -- reconciliation after Redis lost its data ---------------------------------------------
    @property
    def marker_key(self) -> str:
        return f"{self.prefix}reconciled"

    def lost_data(self) -> bool:
        """True once after Redis lost its data (or on first use): the marker key was missing.

        Sets the marker at the same time, so one process of many sees True and reconciles.
        """
        return bool(self.redis.set(self.marker_key, _now_iso(), nx=True))

    def forget_marker(self) -> None:
        """Let the next ``lost_data`` say True again (reconciliation did not finish)."""
        self.redis.delete(self.marker_key)

    def restore(self, jobs: Iterable[Job]) -> int:
        """Put finished jobs known to the database back into Redis where their hash is missing.

        They get the retention TTL and a place in their user's index, so the event streams' snapshots
        show them as finished again. A hash present in Redis is left alone (``Guard.MISSING``). Returns
        how many were restored. One round trip.
        """
        jobs = [job for job in jobs if job.is_terminal]
        if not jobs:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            self.write(job, Guard.MISSING, publish=False, ttl=self.retention, client=pipe)
        return sum(1 for outcome in pipe.execute() if outcome == WRITTEN)

    # -- maintenance ---------------------------------------------------------------------------
    def claim_maintenance(self, name: str, owner: str, ttl: float) -> bool:
        """Let one process of many do a periodic task: true for whoever holds the lock now."""
        key = self.maintenance_lock_key(name)
        if self.redis.set(key, owner, nx=True, px=int(ttl * 1000)):
            return True
        if self.redis.get(key) == owner:
            self.redis.pexpire(key, int(ttl * 1000))
            return True
        return False

    def release_maintenance(self, name: str, owner: str) -> None:
        """Give the lock up at once (a stopping process), so another takes over without waiting."""
        key = self.maintenance_lock_key(name)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != owner:
                    return
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
            except redis.WatchError:
                return


_PROGRESS_WRITTEN, _PROGRESS_LOST, _PROGRESS_ENDED = 1, 0, -1

# KEYS: job hash, user version. ARGV: job channel, user channel, event payload, progress, message, seq,
# updated_at, the runner's attempt.
_PROGRESS_LUA = """
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt')
local status = state[1]
if not status then return 0 end
if TERMINAL_TEST then return -1 end
if tonumber(state[2] or '1') > tonumber(ARGV[8]) then return -1 end
redis.call('HSET', KEYS[1], 'progress', ARGV[4], 'message', ARGV[5], 'seq', ARGV[6], 'updated_at', ARGV[7])
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
""".replace("TERMINAL_TEST", " or ".join(f"status == '{status.value}'" for status in sorted(TERMINAL)))

# KEYS: active set, job hash, user's index, duplicate-start lock, user's share. ARGV: job id, deadline.
# Says: cancel flag, status, attempt (each "" when absent) and 1 when Redis holds all the job owns.
_HEARTBEAT_LUA = """
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
local state = redis.call('HMGET', KEYS[2], 'cancel_requested', 'status', 'attempt')
local whole = redis.call('ZSCORE', KEYS[3], ARGV[1]) and redis.call('EXISTS', KEYS[4]) == 1
    and redis.call('ZSCORE', KEYS[5], ARGV[1])
return {state[1] or '', state[2] or '', state[3] or '', whole and 1 or 0}
"""

#: the fields a progress report changes, and those the clock moves (``job.sent_fields``); every other field of
#: its event is the same from one report to the next
PROGRESS_FIELDS = ("progress", "message", "seq", "updated_at")
MOVING_FIELDS = (*PROGRESS_FIELDS, "elapsed", "estimate")


class ProgressPayloads:
    """The progress write of a job as bytes on the wire: its ``EVALSHA`` and its event's JSON (``job.to_json()``
    byte for byte), from a template per job.

    Between two whole writes of a job (every change but a report's is one: a status, a step, a write-back)
    only ``PROGRESS_FIELDS`` and the clock's fields move. So the rest of the JSON is encoded once, the clock's
    fields are worked out from instants read once (when the job and its running step started), and the
    command's head (the script's SHA, the keys, the channels) is packed once; each report encodes four values.
    ``JobStore.write`` drops a job's template: the whole state changed (a step changes the timeline in place,
    the same dict, which a comparison of the fields would not see). A template is also used only while every
    other field (and ``extra``) still holds the value it was made from; at most ``limit`` are kept.
    """

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._templates: dict[str, _Template] = {}

    def template(self, job: Job) -> _Template:
        key = _static_values(job)
        if job.extra:
            key += tuple(job.extra.items())
        found = self._templates.get(job.id)
        if found is None or found.key != key:
            found = self._templates[job.id] = _Template(job, key)
            if len(self._templates) > self.limit:
                del self._templates[next(iter(self._templates))]
        return found

    def render(self, job: Job, now: float | None = None) -> str:
        """The event's JSON at ``now`` (an epoch; the clock's by default)."""
        return self.template(job).render(job, time.time() if now is None else now)

    def forget(self, job_id: str) -> None:
        self._templates.pop(job_id, None)


class _Template:
    """One job's event JSON cut at its moving values, and its progress command's head once packed."""

    __slots__ = ("key", "parts", "holes", "started", "plan", "estimate", "exact", "head", "sha")

    def __init__(self, job: Job, key: tuple):
        self.key = key
        self.parts, self.holes = _template(job.to_dict())
        # The clock's fields from instants read once; a finished job (never a progress write) as sent_fields has it.
        self.exact = job.is_terminal or bool(job.completed_at)
        self.started = parse_epoch(job.started_at)
        # The estimate as sent, cut at its ``left`` (the one value of it that moves).
        self.estimate = _cut({**job.estimate, "left": _HOLE}) if job.estimate else None
        self.plan = left_plan(job.timeline, job.estimate, job.started_at) if job.estimate else None
        self.head = b""
        self.sha = ""

    def render(self, job: Job, now: float) -> str:
        if self.exact:
            sent = sent_fields(job, now)
        else:
            sent = {"elapsed": elapsed(self.started, now)}
            if self.estimate:
                before, after = self.estimate
                sent["estimate"] = _Encoded(before + _encode(plan_left(self.plan, now)) + after)
        parts = self.parts
        out = [parts[0]]
        for index, name in enumerate(self.holes, 1):
            value = sent[name] if name in sent else getattr(job, name)
            out.append(value if type(value) is _Encoded else _encode(value))
            out.append(parts[index])
        return "".join(out)

    def command(self, job: Job, now: float) -> bytes:
        """The progress script's ``EVALSHA`` for ``job``'s report, packed (``head`` set for the SHA in use)."""
        payload = self.render(job, now).encode()  # ASCII: the JSON escapes the rest
        message = (job.message or "").encode()
        updated = (job.updated_at or "").encode()
        progress, seq, attempt = b"%d" % job.progress, b"%d" % job.seq, b"%d" % job.attempt
        return _PROGRESS_TAIL % (self.head, len(payload), payload, len(progress), progress, len(message), message,
                                 len(seq), seq, len(updated), updated, len(attempt), attempt)


class _Encoded(str):
    """A value already encoded as JSON."""


#: a value no job holds: where a template is cut
_HOLE = "\x00hole\x00"


def _cut(data: dict[str, Any]) -> tuple[str, str]:
    """``data``'s JSON (as ``_encode`` writes a dict) on either side of the one value that is ``_HOLE``."""
    before, after = _encode(data).split(_encode(_HOLE))
    return before, after


#: the progress command's arguments after its head (payload, progress, message, seq, updated_at, attempt)
_PROGRESS_TAIL = b"%b" + b"$%d\r\n%b\r\n" * 6


def _packed(*args: str | int) -> bytes:
    """Arguments packed as RESP bulk strings (a command's head: the array's length goes first)."""
    return b"".join(b"$%d\r\n%b\r\n" % (len(data), data) for data in (str(arg).encode() for arg in args))


def _template(data: dict[str, Any]) -> tuple[list[str], tuple[str, ...]]:
    """``json.dumps(data, separators=(",", ":"), default=str)`` cut at the values of ``MOVING_FIELDS``."""
    parts, holes, text = [], [], "{"
    for index, (name, value) in enumerate(data.items()):
        text += ("," if index else "") + _encode(name) + ":"
        if name in MOVING_FIELDS:
            parts.append(text)
            holes.append(name)
            text = ""
        else:
            text += json.dumps(value, separators=(",", ":"), default=str)
    parts.append(text + "}")
    return parts, tuple(holes)


def _encode(value: Any) -> str:
    """One JSON value as ``Job.to_json`` writes it (the ones a report changes: int, str or None; the clock's:
    a float or a dict)."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is float and math.isfinite(value):
        return float.__repr__(value)  # as json.dumps writes a finite float
    return json.dumps(value, separators=(",", ":"), default=str)


_encode_str = json.encoder.encode_basestring_ascii
_static_values = operator.attrgetter(*(field.name for field in fields(Job)
                                        if field.name != "extra" and field.name not in PROGRESS_FIELDS))


def _created_score(job: Job) -> float:
    created = parse_iso(job.created_at)
    return created.timestamp() if created else time.time()


def _now_iso() -> str:
    return iso(utcnow())


# KEYS: job hash, active set, user index, user version, duplicate-start lock, user's share, job channel,
#       user channel
# ARGV: 1 id, 2 guard, 3 expected seq (orphan; '' = no hash), 4 overdue before ('' = no check), 5 attempt,
#       6 terminal, 7 deadline, 8 now, 9 created score, 10 keep per user, 11 payload ('' = no publish),
#       12 ttl, 13 n, n field/value items, m, m fields to delete
_WRITE_LUA = """
local guard = ARGV[2]
local state = redis.call('HMGET', KEYS[1], 'status', 'seq', 'attempt')
local status = state[1]
if guard == 'missing' then
  if status then return 0 end
elseif guard ~= 'record' then
  if TERMINAL_TEST then return 0 end
  if guard == 'runner' then
    if tonumber(state[3] or '1') > tonumber(ARGV[5]) then return 0 end
  else
    if ARGV[4] ~= '' then
      local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
      if deadline and tonumber(deadline) > tonumber(ARGV[4]) then return 0 end
    end
    if (state[2] or '') ~= ARGV[3] then return -1 end
  end
end
local n = tonumber(ARGV[13])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 14, 13 + n)) end
local m = tonumber(ARGV[14 + n])
if m > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 15 + n, 14 + n + m)) end
if ARGV[6] == '1' then
  redis.call('HDEL', KEYS[1], 'cancel_requested')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  if tonumber(ARGV[12]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[12]) end
else
  redis.call('PERSIST', KEYS[1])  -- written over a cancel request's hash, which expires
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
  redis.call('SET', KEYS[5], ARGV[1], 'NX')
  redis.call('ZADD', KEYS[6], 'NX', ARGV[8], ARGV[1])
end
redis.call('ZADD', KEYS[3], 'NX', ARGV[9], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[10]) - 1)
redis.call('INCR', KEYS[4])
if ARGV[11] ~= '' then
  redis.call('PUBLISH', KEYS[7], ARGV[11])
  redis.call('PUBLISH', KEYS[8], ARGV[11])
end
return 1
""".replace("TERMINAL_TEST", " or ".join(f"status == '{status.value}'" for status in sorted(TERMINAL)))

# KEYS: job hash. ARGV: checkpoint field/value pairs. Only into a hash that holds a job: a bare HSET after
# Redis lost the hash would make one of checkpoints alone, which readers would take for a job with no owner.
_CHECKPOINT_LUA = """
if redis.call('HEXISTS', KEYS[1], 'status') == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: job hash. ARGV: retention. A cancel request on a hash Redis lost leaves one with the flag alone: it
# expires, unless its runner writes the job back around it first (the whole write persists the hash).
_CANCEL_LUA = """
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
if redis.call('HEXISTS', KEYS[1], 'status') == 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
"""

# KEYS: job hash, active set. ARGV: id, the handing runner's attempt.
_HAND_OVER = """
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if not state[1] or state[1] == 'completed' or state[1] == 'failed' or state[1] == 'cancelled' then return 0 end
if tonumber(state[2] or '1') ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""


def _job_or_none(data: dict[str, str]) -> Job | None:
    """The job a hash holds; None for no hash, or for one without a status: what a write keyed on the job
    alone (a cancel request) leaves after Redis lost the job, until its runner writes it all back."""
    return Job.from_hash(data) if "status" in data else None
