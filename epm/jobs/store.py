"""JobStore: the live state of jobs in Redis. Every Redis key and channel name is built here.

The key contract (prefix ``EPM_KEY_PREFIX``, default ``epm:``) is documented for operators in
docs/operations.md; keep the two in step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

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

    def job_channel(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def user_channel(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def maintenance_lock_key(self, name: str) -> str:
        return f"{self.prefix}maintenance:{name}"

    # -- writing -------------------------------------------------------------------------------
    def deadline(self) -> float:
        return time.time() + self.heartbeat_timeout

    def save(self, job: Job, *, publish: bool = True) -> None:
        """Write the job's whole state, refresh its heartbeat and publish it: one round trip.

        The caller sets ``job.seq`` (see ``next_seq``) before each save; only a job's runner writes
        a live job, so the seq it holds is the newest.
        """
        write, delete = job.to_hash()
        key = self.job_key(job.id)
        pipe = self.redis.pipeline(transaction=True)
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
        pipe.execute()

    def heartbeat(self, job_id: str) -> tuple[bool, bool]:
        """Push the job's deadline forward. One round trip.

        Returns ``(cancel requested, state present)``; the state is absent when Redis lost it
        (a restart without persistence, FLUSHALL), and the runner then writes it all again.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.active_key, {job_id: self.deadline()}, xx=True)
        pipe.hget(self.job_key(job_id), "cancel_requested")
        pipe.exists(self.job_key(job_id))
        _, flag, present = pipe.execute()
        return flag == "1", bool(present)

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
                self._queue_save(pipe, job)
                pipe.execute()
                return job
            except redis.WatchError:
                return None

    def _queue_save(self, pipe, job: Job) -> None:
        write, delete = job.to_hash()
        key = self.job_key(job.id)
        pipe.hset(key, mapping=write)
        pipe.hdel(key, "cancel_requested", *delete)
        pipe.zrem(self.active_key, job.id)
        pipe.incr(self.user_version_key(job.user_id))
        payload = job.to_json()
        pipe.publish(self.job_channel(job.id), payload)
        pipe.publish(self.user_channel(job.user_id), payload)

    # -- the outbox of terminal states not yet in the database ---------------------------------
    def outbox_add(self, job_id: str) -> None:
        self.redis.zadd(self.outbox_key, {job_id: time.time()}, nx=True)

    def outbox_ids(self, limit: int = 100) -> list[str]:
        return self.redis.zrange(self.outbox_key, 0, limit - 1)

    def outbox_remove(self, job_id: str) -> None:
        self.redis.zrem(self.outbox_key, job_id)

    def outbox_depth(self) -> int:
        return self.redis.zcard(self.outbox_key)

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


def _created_score(job: Job) -> float:
    created = parse_iso(job.created_at)
    return created.timestamp() if created else time.time()


def _now_iso() -> str:
    return iso(utcnow())
