"""Allocation tracing for memory hunts: off unless ``EPM_TRACEMALLOC_DIR`` is set (``scripts/soak.py`` sets it).

With it set, the process traces its allocations (``tracemalloc``, ``EPM_TRACEMALLOC_FRAMES`` frames each)
and, on ``SIGUSR2``, writes what it holds to ``<dir>/<pid>-<n>.tracemalloc`` (a tracemalloc snapshot) and
``<dir>/<pid>-<n>.types.json`` (live objects counted by type), ``n`` counting the signals from 1. A tool
outside the process diffs two of them. Tracing slows every allocation and costs memory: never in production.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import signal
import threading
import tracemalloc
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("epm.memtrace")


def init_app(app: Flask) -> None:
    """Start tracing and answer ``SIGUSR2`` with a dump, if ``EPM_TRACEMALLOC_DIR`` asks for it."""
    directory = app.config.get("EPM_TRACEMALLOC_DIR")
    if not directory:
        return
    if threading.current_thread() is not threading.main_thread():
        log.warning("EPM_TRACEMALLOC_DIR is set, but signals can only be handled from the main thread: not tracing")
        return
    os.makedirs(directory, exist_ok=True)
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(app.config.get("EPM_TRACEMALLOC_FRAMES") or 1))
    numbers = itertools.count(1)

    def on_signal(_signum: int, _frame: Any) -> None:
        dump(os.path.join(directory, f"{os.getpid()}-{next(numbers)}"))

    signal.signal(signal.SIGUSR2, on_signal)
    log.warning("tracing allocations (slow): SIGUSR2 writes a snapshot to %s", directory)


def dump(path: str) -> None:
    """Write ``path.tracemalloc`` and ``path.types.json`` from a forked copy of this process.

    The copy does the work: a snapshot of every trace takes tens of MB for a moment, which the
    process would keep as resident memory afterwards and so hide later growth from an RSS reading.
    Each file appears whole (written, then renamed).
    """
    gc.collect()  # here, not in the copy: finalizers belong to this process; cycles are not held memory
    pid = os.fork()  # under gevent, its fork: the hub reaps the copy
    if pid == 0:
        code = 0
        try:
            types = Counter(type(obj).__qualname__ for obj in gc.get_objects())
            _write(path + ".types.json", lambda tmp: _write_json(tmp, dict(types)))
            _write(path + ".tracemalloc", tracemalloc.take_snapshot().dump)
        except BaseException:
            log.exception("memtrace: no snapshot written to %s", path)
            code = 1
        finally:
            os._exit(code)
    if not _gevent_reaps():
        threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True, name="memtrace-reap").start()


def _gevent_reaps() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("os")


def _write(path: str, writer) -> None:
    tmp = path + ".part"
    writer(tmp)
    os.replace(tmp, path)


def _write_json(path: str, data: dict[str, int]) -> None:
    with open(path, "w") as out:
        json.dump(data, out)
