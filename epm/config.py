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
        # None means the embedded default: SQLite in the instance folder (set in create_app).
        "SQLALCHEMY_DATABASE_URI": (database_uri(database_url, _int(env, "EPM_DB_CONNECT_TIMEOUT", 3))
                                    if database_url else None),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "EPM_KEY_PREFIX": env.get("EPM_KEY_PREFIX", "epm:"),
        # How long a finished job's Redis hash lives once its terminal state is in PostgreSQL.
        "EPM_RETENTION_SECONDS": _int(env, "EPM_RETENTION_SECONDS", 24 * 3600),
        # How many of a user's recent jobs the per-user Redis index keeps.
        "EPM_USER_JOBS_KEEP": _int(env, "EPM_USER_JOBS_KEEP", 200),
        # A running job whose heartbeat is older than this is reaped as interrupted.
        "EPM_HEARTBEAT_TIMEOUT": _float(env, "EPM_HEARTBEAT_TIMEOUT", 30.0),
        # Progress updates of one job are coalesced to at most one per interval (status changes never are).
        "EPM_PROGRESS_INTERVAL": _float(env, "EPM_PROGRESS_INTERVAL", 0.1),
        # Pacing of each stage of an operation; stands in for the model calls of a production generator.
        "EPM_STAGE_SECONDS": _float(env, "EPM_STAGE_SECONDS", 0.0),
        # Seconds between keep-alive comments on an idle event stream.
        "EPM_SSE_HEARTBEAT": _float(env, "EPM_SSE_HEARTBEAT", 15.0),
        # Seconds a Redis command may take before the API answers 503 instead of hanging.
        "EPM_REDIS_TIMEOUT": _float(env, "EPM_REDIS_TIMEOUT", 2.0),
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
        # The site is served over HTTPS only: every cookie Secure, HSTS sent (epm/web/proxy.py). Without it,
        # responses to requests that came over HTTPS (X-Forwarded-Proto from a trusted proxy) still get Secure cookies.
        "EPM_HTTPS": _bool(env, "EPM_HTTPS", False),
        # max-age of Strict-Transport-Security with EPM_HTTPS (0: not sent).
        "EPM_HSTS_SECONDS": _int(env, "EPM_HSTS_SECONDS", 365 * 24 * 3600),
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
    }
