"""Greenlets or threads: what runs beside the event loop, the same code under gevent and without it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def under_gevent() -> bool:
    """Whether this process runs under gevent's monkey-patching (gunicorn's gevent worker)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run pure computation without blocking the event loop (gevent's threadpool under gevent)."""
    if under_gevent():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args, kwargs)
    return fn(*args, **kwargs)
