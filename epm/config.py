"""Settings, read from the environment once, when the app is created.

Nothing else in epm reads ``os.environ``: every module asks ``current_app.config``.
With no variables set the app runs on its embedded default (in-process fakeredis and a SQLite
file in the instance folder), so a newcomer needs no server to try it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def sentinels(raw: str | None) -> list[tuple[str, int]]:
    """``REDIS_SENTINELS`` ("host:port,host:port") as ``[(host, port), ...]``; empty when unset."""
    found = []
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_SENTINELS must be comma-separated host:port pairs, got {item!r}")
        found.append((host.strip("[]"), int(port)))
    return found


def database_uri(url: str, connect_timeout: int = 3) -> str:
    """Return the SQLAlchemy URI for ``DATABASE_URL``, choosing the psycopg 3 driver for PostgreSQL.

    psycopg 3 cooperates with gevent by itself, where psycopg2 would need psycogreen. Connecting
    gives up after ``connect_timeout`` seconds (unless the URL says otherwise), so an unreachable
    database turns into a quick 503 rather than a request hanging for the kernel's TCP timeout.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
            if "connect_timeout=" not in url:
                url += ("&" if "?" in url else "?") + f"connect_timeout={connect_timeout}"
            return url
    return url


POOL_OPTIONS = ("pool_size", "max_overflow", "pool_timeout")


def engine_options(env: Mapping[str, str], database_url: str | None) -> dict[str, Any]:
    """The SQLAlchemy pool of one process: ``EPM_DB_POOL_SIZE`` connections, ``EPM_DB_MAX_OVERFLOW`` more in a burst.

    Jobs hold no connection while they run (epm/jobs/runner.py releases the session at every stage), so
    the pool is sized for request traffic, not for the number of running jobs. A request that finds
    the pool exhausted waits ``EPM_DB_POOL_TIMEOUT`` seconds, then answers 503.
    """
    options: dict[str, Any] = {"pool_pre_ping": True}
    if database_url:
        options.update(pool_size=_int(env, "EPM_DB_POOL_SIZE", 5), max_overflow=_int(env, "EPM_DB_MAX_OVERFLOW", 5),
                       pool_timeout=_float(env, "EPM_DB_POOL_TIMEOUT", 10.0))
    return options


def load(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL") or None
    database_url = env.get("DATABASE_URL") or None
    return {
        "SECRET_KEY": env.get("SECRET_KEY") or secrets.token_hex(32),
        "SECRET_KEY_GENERATED": not env.get("SECRET_KEY"),
        # None means the embedded default: fakeredis inside this process.
        "REDIS_URL": redis_url,
        # Redis through Sentinel (they win over REDIS_URL, whose database number and password still apply).
        "REDIS_SENTINELS": sentinels(env.get("REDIS_SENTINELS")),
        "REDIS_SENTINEL_MASTER": env.get("REDIS_SENTINEL_MASTER") or None,
        # None means the embedded default: SQLite in the instance folder (set in create_app).
        "SQLALCHEMY_DATABASE_URI": (database_uri(database_url, _int(env, "EPM_DB_CONNECT_TIMEOUT", 3))
                                    if database_url else None),
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(env, database_url),
        # Jobs one account may have pending or running at once; one more start answers 429.
        "EPM_MAX_RUNNING_PER_USER": _int(env, "EPM_MAX_RUNNING_PER_USER", 5),
        "EPM_KEY_PREFIX": env.get("EPM_KEY_PREFIX", "epm:"),
        # How long a finished job's Redis hash lives once its terminal state is in PostgreSQL.
        "EPM_RETENTION_SECONDS": _int(env, "EPM_RETENTION_SECONDS", 24 * 3600),
        # How many of a user's recent jobs the per-user Redis index keeps.
        "EPM_USER_JOBS_KEEP": _int(env, "EPM_USER_JOBS_KEEP", 200),
        # A running job whose heartbeat is older than this is reaped as interrupted.
        "EPM_HEARTBEAT_TIMEOUT": _float(env, "EPM_HEARTBEAT_TIMEOUT", 30.0),
        # How many times a resumable job runs at most (the first run included) before a lost process
        # leaves it failed/interrupted; 1 turns automatic resume off.
        "EPM_MAX_ATTEMPTS": max(1, _int(env, "EPM_MAX_ATTEMPTS", 3)),
        # Progress updates of one job are coalesced to at most one per interval (status changes never are).
        "EPM_PROGRESS_INTERVAL": _float(env, "EPM_PROGRESS_INTERVAL", 0.1),
        # Seconds a hot Redis write (progress, heartbeat, checkpoint) of a busy process waits for the writes
        # about to come, so that they go to Redis as one batch (epm/jobs/lane.py); 0 sends each at once.
        "EPM_WRITE_LINGER": max(0.0, _float(env, "EPM_WRITE_LINGER", 0.005)),
        # Pacing of each stage of an operation; stands in for the model calls of a production generator.
        "EPM_STAGE_SECONDS": _float(env, "EPM_STAGE_SECONDS", 0.0),
        # Seconds between keep-alive comments on an idle event stream.
        "EPM_SSE_HEARTBEAT": _float(env, "EPM_SSE_HEARTBEAT", 15.0),
        # Event streams one process opens at once (session check, SUBSCRIBE, snapshot); more wait their turn,
        # so a burst of opens (every tab after a deploy) neither floods Redis with new connections nor starves
        # the worker's loop, and none is refused.
        "EPM_SSE_OPENING": max(1, _int(env, "EPM_SSE_OPENING", 64)),
        # Seconds of silence after which a worker's pub/sub connection is PINGed (and replaced if it is dead).
        "EPM_PUBSUB_HEALTH_CHECK": _float(env, "EPM_PUBSUB_HEALTH_CHECK", 5.0),
        # Seconds a Redis command may take before the API answers 503 instead of hanging.
        "EPM_REDIS_TIMEOUT": _float(env, "EPM_REDIS_TIMEOUT", 2.0),
        # Redis connections one process may hold at once, sized from the connections a worker accepts
        # (gunicorn.conf.py reads EPM_WORKER_CONNECTIONS too), capped so that a few instances stay far
        # below Redis's maxclients (10,000): a burst of stream opens must not queue behind a small pool.
        "EPM_REDIS_MAX_CONNECTIONS": _int(env, "EPM_REDIS_MAX_CONNECTIONS",
                                          min(_int(env, "EPM_WORKER_CONNECTIONS", 10000), 1000)),
        # Event streams one worker leaves to its hub (no greenlet each, one file descriptor); past this a new
        # stream keeps its greenlet, and gunicorn's worker_connections bounds those.
        "EPM_STREAMS_PER_WORKER": _int(env, "EPM_STREAMS_PER_WORKER", _int(env, "EPM_WORKER_CONNECTIONS", 10000)),
        # Seconds a request waits for one of those connections when all are busy (a burst, not an outage).
        "EPM_REDIS_POOL_TIMEOUT": _float(env, "EPM_REDIS_POOL_TIMEOUT", 10.0),
        # Seconds each check of /readyz (Redis PING, database SELECT 1) may take before it counts as down.
        "EPM_READY_TIMEOUT": _float(env, "EPM_READY_TIMEOUT", 2.0),
        # Background maintenance (reaper, outbox flusher) in every app process.
        "EPM_MAINTENANCE": _bool(env, "EPM_MAINTENANCE", True),
        "EPM_MAINTENANCE_INTERVAL": _float(env, "EPM_MAINTENANCE_INTERVAL", 5.0),
        # Research may fetch private, loopback and link-local addresses only when this is on.
        "EPM_RESEARCH_ALLOW_PRIVATE": _bool(env, "EPM_RESEARCH_ALLOW_PRIVATE", False),
        "EPM_RESEARCH_TIMEOUT": _float(env, "EPM_RESEARCH_TIMEOUT", 10.0),
        "EPM_RESEARCH_MAX_BYTES": _int(env, "EPM_RESEARCH_MAX_BYTES", 2 * 1024 * 1024),
        "LOG_FORMAT": env.get("LOG_FORMAT", "text"),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        # /metrics answers only with "Authorization: Bearer <token>" when set.
        "METRICS_TOKEN": env.get("METRICS_TOKEN") or None,
        # Memory hunts only (scripts/soak.py): trace allocations, dump them here on SIGUSR2 (epm/memtrace.py).
        "EPM_TRACEMALLOC_DIR": env.get("EPM_TRACEMALLOC_DIR") or None,
        "EPM_TRACEMALLOC_FRAMES": _int(env, "EPM_TRACEMALLOC_FRAMES", 1),
        # A request body larger than this many bytes is refused with 413 before it is read.
        "MAX_CONTENT_LENGTH": _int(env, "EPM_MAX_REQUEST_BYTES", 1024 * 1024),
        # The test operation demo_countdown is offered only when on (make run, the tests, the benchmarks).
        "EPM_DEMO": _bool(env, "EPM_DEMO", False),
        # Request-rate limits (Flask-Limiter's syntax, ";" between several), kept in Redis (in memory on the
        # embedded default). Each applies per account and per address; EPM_RATE_LIMITS=0 turns them off.
        "RATELIMIT_ENABLED": _bool(env, "EPM_RATE_LIMITS", True),
        "EPM_LIMIT_SIGNIN": env.get("EPM_LIMIT_SIGNIN") or "10 per minute; 100 per day",
        "EPM_LIMIT_SIGNUP": env.get("EPM_LIMIT_SIGNUP") or "5 per minute; 20 per day",
        "EPM_LIMIT_START": env.get("EPM_LIMIT_START") or "30 per minute; 500 per hour",
        # Days a "remember me" sign-in lasts (only when the box is ticked).
        "REMEMBER_COOKIE_DAYS": _int(env, "EPM_REMEMBER_DAYS", 30),
        # The site is served over HTTPS only: every cookie Secure, HSTS sent (epm/web/proxy.py). Without it,
        # responses to requests that came over HTTPS (X-Forwarded-Proto from a trusted proxy) still get Secure cookies.
        "EPM_HTTPS": _bool(env, "EPM_HTTPS", False),
        # max-age of Strict-Transport-Security with EPM_HTTPS (0: not sent).
        "EPM_HSTS_SECONDS": _int(env, "EPM_HSTS_SECONDS", 365 * 24 * 3600),
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
    }
