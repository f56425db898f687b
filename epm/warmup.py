"""A worker's one-time work done at its boot, before it serves, instead of on the gevent loop mid-request.

A gevent worker serves every request, stream and job on one thread: whatever one greenlet computes
without yielding, all the others wait for. Two costs used to land on the first requests after a boot and
on every busy minute after that (found with ``EPM_LOOP_BLOCK_DEBUG=1``, see epm/metrics.py):

- **Template compiles:** Jinja compiles a template at its first render, 2–30 ms each (``programs/show.html``
  about 30 ms), so the first sign-in's dashboard or the first program page stalled the worker.
- **Full garbage collections:** the app's modules, classes and functions are about 140,000 objects that
  live as long as the process, and every generation-2 collection walked all of them: 65–90 ms of CPU
  with the GIL held, in whichever request's allocation triggered it (in a burst of sign-ups, about one a
  minute per worker), to free a few hundred objects. ``gc.freeze()`` moves what exists at boot out of the
  collector's reach, so a full collection walks only what was allocated since (the CPython docs' advice
  for pre-forked servers).
- **The unknown-username hash:** a sign-in with a name that has no account checks the password against a
  stand-in hash so it costs the same as a wrong password; making that hash is one scrypt, 110–120 ms of
  CPU, and it used to be made on the loop by the first such sign-in.

gunicorn.conf.py calls ``warm`` from ``post_worker_init``, before the loop monitor starts and before the
worker accepts its first connection, so this work delays no request.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("epm")


def warm(app: Flask) -> dict[str, float]:
    """Compile every template, configure the ORM's mappers, make the unknown-username hash, then freeze the
    boot heap out of the collector.

    Returns what was done (templates compiled, objects frozen, seconds taken), also logged at DEBUG.
    """
    started = time.perf_counter()
    templates = compile_templates(app)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # the first query would do it: every model's relationships and columns resolved
    from .web.auth import unknown_user_hash

    unknown_user_hash()  # one scrypt, made now rather than by the first sign-in with an unknown name
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    done = {"templates": float(templates), "frozen": float(gc.get_freeze_count()),
            "seconds": time.perf_counter() - started}
    log.debug("worker warmed: %(templates).0f templates compiled, %(frozen).0f objects frozen in %(seconds).2fs",
              done)
    return done


def compile_templates(app: Flask) -> int:
    """Load every template of the app into its Jinja environment's cache (compiled once, for the process)."""
    env = app.jinja_env
    names = env.list_templates()
    for name in names:
        env.get_template(name)
    return len(names)
