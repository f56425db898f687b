"""The peers bench_push.py measures beside epm, as their users would deploy them, and their publisher.

- ``sse_app``: flask-sse (its blueprint at ``/stream?channel=...``, one Redis pub/sub connection per stream),
  served by gunicorn with gevent workers like epm.
- ``socketio_app``: Flask-SocketIO with its Redis message queue, served by gunicorn with gevent-websocket's
  worker; each client joins the room of its job (``?room=...``).
- ``publish``: jobs that report progress every ``step_seconds``, published through the peer's own API
  (``flask_sse.sse.publish``, ``SocketIO(message_queue=...).emit``) from a separate process, as a task
  worker would; each event has the shape of an epm job (id, seq, status, message "Step k of n",
  updated_at), so the same clients measure both.

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


def _socketio_app() -> Flask:
    from flask import request
    from flask_socketio import SocketIO, join_room

    app = Flask("bench_flask_socketio")
    socketio = SocketIO(app, message_queue=os.environ["REDIS_URL"], async_mode="gevent",
                        channel=socketio_channel(), cors_allowed_origins="*")

    @socketio.on("connect")
    def connect(auth=None):
        join_room(request.args.get("room", "none"))

    @app.get("/healthz")
    def healthz():
        return "ok"

    return app


def socketio_channel() -> str:
    """The Redis channel of Flask-SocketIO's message queue, under the run's key prefix."""
    return os.environ.get("EPM_KEY_PREFIX", "bench:") + "flask-socketio"


def job_event(job_id: str, step: int, steps: int, seq: int) -> dict:
    """The state an epm demo job publishes at ``step`` (``steps + 1``: its terminal state), every field of
    epm's event (``Job.to_dict()``), so that each peer carries events of the same size."""
    from epm.jobs.job import Job, JobStatus

    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    terminal = step > steps
    job = Job(id=job_id, job_type="demo_countdown", user_id="1", title="Demo countdown",
              status=JobStatus.COMPLETED if terminal else JobStatus.RUNNING,
              progress=min(100, (step - 1) * 100 // steps), message="Countdown finished" if terminal
              else f"Step {step} of {steps}", seq=seq, created_at=now, started_at=now, updated_at=now,
              completed_at=now if terminal else None,
              result={"summary": f"Counted {steps} steps", "steps": steps} if terminal else None)
    return job.to_dict()


def publish(peer: str, redis_url: str, channels: list[str], steps: int, step_seconds: float) -> None:
    """Each channel (a flask-sse channel, a Socket.IO room) carries one job; every job steps every
    ``step_seconds``, the jobs spread over the step as independent jobs would be."""
    if peer == "flask-socketio":
        from flask_socketio import SocketIO

        emitter = SocketIO(message_queue=redis_url, channel=socketio_channel())

        def send(event: dict, channel: str) -> None:
            emitter.emit("job", event, to=channel)
    else:
        from flask_sse import sse

        def send(event: dict, channel: str) -> None:
            sse.publish(event, type="job", id=event["seq"], channel=channel)

    app = Flask("bench_publisher")
    app.config["REDIS_URL"] = redis_url
    with app.app_context():
        started = time.monotonic()
        for step in range(1, steps + 2):
            for index, channel in enumerate(channels):
                due = started + (step - 1) * step_seconds + step_seconds * index / len(channels)
                time.sleep(max(0.0, due - time.monotonic()))
                send(job_event(f"peer-{index}", step, steps, int(time.time() * 1000)), channel)


def publish_main() -> None:
    spec = json.loads(os.environ["BENCH_PUBLISH"])
    publish(os.environ["BENCH_PEER"], os.environ["REDIS_URL"], spec["channels"], spec["steps"], spec["step_seconds"])


sse_app = _sse_app() if os.environ.get("BENCH_PEER") == "flask-sse" else None
socketio_app = _socketio_app() if os.environ.get("BENCH_PEER") == "flask-socketio" else None

if __name__ == "__main__":
    publish_main()
