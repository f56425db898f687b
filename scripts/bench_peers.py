"""The peers bench_push.py measures beside epm, as their users would deploy them, and their publisher.

- ``sse_app``: flask-sse (its blueprint at ``/stream?channel=...``, one Redis pub/sub connection per stream),
  served by gunicorn with gevent workers like epm.
- ``publish``: jobs that report progress every ``step_seconds``, published through the peer's own API
  (``flask_sse.sse.publish``) from a separate process, as a task worker would; each event has the shape
  of an epm job (id, seq, status, message "Step k of n", updated_at), so the same clients measure both.

Run by bench_push.py; not a part of epm (the peers are in the ``bench`` extra).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

from flask import Flask


def _sse_app() -> Flask:
    from flask_sse import sse

    app = Flask("bench_flask_sse")
    app.config["REDIS_URL"] = os.environ["REDIS_URL"]
    app.register_blueprint(sse, url_prefix="/stream")

    @app.get("/healthz")
    def healthz():
        return "ok"

    return app


def job_event(job_id: str, step: int, steps: int, seq: int) -> dict:
    """The state an epm demo job publishes at ``step`` (``steps + 1``: its terminal state)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    terminal = step > steps
    return {"id": job_id, "seq": seq, "status": "completed" if terminal else "running",
            "progress": min(100, step * 100 // steps), "terminal": terminal, "updated_at": now,
            "message": "Done" if terminal else f"Step {step} of {steps}",
            "result": {"steps": steps} if terminal else None}


def publish(redis_url: str, channels: list[str], steps: int, step_seconds: float) -> None:
    """Each channel carries one job; all jobs step together every ``step_seconds`` (jittered start)."""
    from flask_sse import sse

    app = Flask("bench_publisher")
    app.config["REDIS_URL"] = redis_url
    with app.app_context():
        started = time.monotonic()
        for step in range(1, steps + 2):
            for index, channel in enumerate(channels):
                # Spread the jobs over the step, as independent jobs would be.
                due = started + (step - 1) * step_seconds + step_seconds * index / len(channels)
                time.sleep(max(0.0, due - time.monotonic()))
                event = job_event(f"peer-{index}", step, steps, int(time.time() * 1000))
                sse.publish(event, type="job", id=event["seq"], channel=channel)


def publish_main() -> None:
    spec = json.loads(os.environ["BENCH_PUBLISH"])
    publish(os.environ["REDIS_URL"], spec["channels"], spec["steps"], spec["step_seconds"])


sse_app = _sse_app() if os.environ.get("BENCH_PEER") == "flask-sse" else None

if __name__ == "__main__":
    publish_main()
