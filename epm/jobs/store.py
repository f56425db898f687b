"""JobStore: the live state of jobs in Redis. Every Redis key and channel name is built here.

The key contract (prefix ``EPM_KEY_PREFIX``, default ``epm:``) is documented for operators in
docs/operations.md; keep the two in step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from .job import Job, JobStatus, iso, next_seq, parse_iso, utcnow


class JobStore:
    """Reads and writes job state in Redis; one ``save`` is one round trip."""

    def __init__(self, client: redis.Redis, *, prefix: str = "epm:", retention: int = 86400,
                 keep_per_user: int = 200, heartbeat_timeout: float = 30.0):
        self.redis = client
        self.prefix = prefix
        self.retention = retention
        self.keep_per_user = keep_per_user
        self.heartbeat_timeout = heartbeat_timeout

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

    # -- writing -------------------------------------------------------------------------------
    def deadline(self) -> float:
        return time.time() + self.heartbeat_timeout

    def save(self, job: Job, *, publish: bool = True, progress_only: bool = False) -> None:
        """Write the job's whole state, refresh its heartbeat and publish it: one round trip.

        The caller sets ``job.seq`` (see ``next_seq``) before each save; only a job's runner writes
        a live job, so the seq it holds is the newest. ``progress_only`` is the runner's hot path: a
        live job whose hash and index entries are known to be in place writes only the fields a
        progress report changes (the event still carries the whole state).
        """
        pipe = self.redis.pipeline(transaction=True)
        if progress_only:
            self._queue_progress(pipe, job)
        else:
            self._queue_write(pipe, job, publish=publish)
        pipe.execute()

    def _queue_progress(self, pipe, job: Job) -> None:
        # The whole hash still (so a hash lost in a flush comes back whole), but not the deletions of
        # unset fields nor the user index: a progress report changes neither. The heartbeat notices a
        # missing index entry and has the runner write everything (see ``heartbeat``).
        write, _ = job.to_hash()
        pipe.hset(self.job_key(job.id), mapping=write)
        pipe.zadd(self.active_key, {job.id: self.deadline()})
        pipe.incr(self.user_version_key(job.user_id))
        payload = job.to_json()
        pipe.publish(self.job_channel(job.id), payload)
        pipe.publish(self.user_channel(job.user_id), payload)

    def save_unless_finished(self, job: Job) -> bool:
        """``save`` unless Redis already holds a terminal state for the job; False when it does.

        For a runner whose heartbeat may have lapsed (it was stalled or cut off from Redis): a
        reaper may have ended the job meanwhile, and terminal states are final, so the runner's
        state must not overwrite that. Two round trips, guarded by WATCH like ``finish_orphan``.
        """
        key = self.job_key(job.id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    status = pipe.hget(key, "status")
                    if status is not None and JobStatus(status).is_terminal:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    self._queue_write(pipe, job, publish=True)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # a cancel request or a reaper touched the hash: look again

    def _queue_write(self, pipe, job: Job, *, publish: bool) -> None:
        write, delete = job.to_hash()
        key = self.job_key(job.id)
        pipe.hset(key, mapping=write)
        if delete:
            pipe.hdel(key, *delete)
        if job.is_terminal:
            pipe.hdel(key, "cancel_requested")
            pipe.zrem(self.active_key, job.id)
        else:
            pipe.zadd(self.active_key, {job.id: self.deadline()})
        user_jobs = self.user_jobs_key(job.user_id)
        pipe.zadd(user_jobs, {job.id: _created_score(job)}, nx=True)
        pipe.zremrangebyrank(user_jobs, 0, -self.keep_per_user - 1)
        pipe.incr(self.user_version_key(job.user_id))
        if publish:
            payload = job.to_json()
            pipe.publish(self.job_channel(job.id), payload)
            pipe.publish(self.user_channel(job.user_id), payload)

    def heartbeat(self, job_id: str, user_id: str) -> tuple[bool, JobStatus | None]:
        """Push the job's deadline forward (only while it is active). One round trip.

        Returns ``(cancel requested, status in Redis)``. The status is None when Redis lost the
        job (a restart without persistence, FLUSHALL) — or only part of it: the job is not in its
        user's index — and the runner then writes it all again. A terminal status the runner did
        not write means a reaper ended the job.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.active_key, {job_id: self.deadline()}, xx=True)
        pipe.hmget(self.job_key(job_id), "cancel_requested", "status")
        pipe.zscore(self.user_jobs_key(user_id), job_id)
        _, (flag, status), indexed = pipe.execute()
        if indexed is None and not (status and JobStatus(status).is_terminal):
            status = None
        return flag == "1", JobStatus(status) if status else None

    def request_cancel(self, job_id: str) -> None:
        self.redis.hset(self.job_key(job_id), "cancel_requested", "1")

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

    # -- reading -------------------------------------------------------------------------------
    def load(self, job_id: str) -> Job | None:
        data = self.redis.hgetall(self.job_key(job_id))
        return Job.from_hash(data) if data else None

    def load_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        ids = list(job_ids)
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        return {job_id: Job.from_hash(data) for job_id, data in zip(ids, pipe.execute(), strict=True) if data}

    def recent_ids(self, user_id: str, limit: int = 50) -> list[str]:
        return self.redis.zrevrange(self.user_jobs_key(user_id), 0, limit - 1)

    def user_version(self, user_id: str) -> int:
        return int(self.redis.get(self.user_version_key(user_id)) or 0)

    def active_ids(self) -> dict[str, float]:
        return dict(self.redis.zrange(self.active_key, 0, -1, withscores=True))

    def overdue_ids(self, now: float | None = None) -> list[str]:
        return self.redis.zrangebyscore(self.active_key, "-inf", now if now is not None else time.time())

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

    # -- finishing a job whose runner is gone --------------------------------------------------
    def watch(self, job_id: str) -> None:
        """Give a job a heartbeat deadline if it has none, so the reaper ends it unless a runner is alive."""
        self.redis.zadd(self.active_key, {job_id: self.deadline()}, nx=True)

    def finish_orphan(self, job_id: str, status: JobStatus, *, error_code: str | None, error: str | None,
                      require_overdue: bool = True, fallback: Job | None = None) -> Job | None:
        """Write a terminal state for a job nobody is running; return it, or None if it was not orphaned.

        Guarded by WATCH: if the runner refreshes its heartbeat (or finishes) in between, nothing
        is written, so a live but slow job is never reaped. ``fallback`` is the job as the database
        knows it, used when Redis has lost the job's hash.
        """
        key = self.job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key, self.active_key)
                data = pipe.hgetall(key)
                deadline = pipe.zscore(self.active_key, job_id)
                if not data and fallback is None:
                    pipe.multi()
                    pipe.zrem(self.active_key, job_id)
                    pipe.execute()
                    return None
                job = Job.from_hash(data) if data else fallback
                if job.is_terminal and not data:
                    # Redis lost a job that had finished: show it as finished again, and stop watching it.
                    pipe.multi()
                    self._queue_write(pipe, job, publish=True)
                    pipe.expire(key, self.retention)
                    pipe.execute()
                    return None
                if job.is_terminal or (require_overdue and deadline is not None and deadline > time.time()):
                    return None
                now = _now_iso()
                job.status = status
                job.seq = next_seq(job.seq)
                job.error_code = error_code
                job.error = error
                job.updated_at = now
                job.completed_at = now
                job.cancel_requested = False
                pipe.multi()
                self._queue_write(pipe, job, publish=True)
                pipe.execute()
                return job
            except redis.WatchError:
                return None

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
        show them as finished again. A hash present in Redis is left alone. Returns how many were restored.
        """
        jobs = [job for job in jobs if job.is_terminal]
        if not jobs:
            return 0
        check = self.redis.pipeline(transaction=False)
        for job in jobs:
            check.exists(self.job_key(job.id))
        missing = [job for job, present in zip(jobs, check.execute(), strict=True) if not present]
        pipe = self.redis.pipeline(transaction=False)
        for job in missing:
            self._queue_write(pipe, job, publish=False)
            pipe.expire(self.job_key(job.id), self.retention)
        pipe.execute()
        return len(missing)

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


def _created_score(job: Job) -> float:
    created = parse_iso(job.created_at)
    return created.timestamp() if created else time.time()


def _now_iso() -> str:
    return iso(utcnow())
