"""Server-Sent Events: a snapshot of the current state, then every newer event, with heartbeats.

One Redis pub/sub connection per process (``EventHub``) carries the channels that this process's
streams follow and fans each message out to them, already rendered to the wire format once. A
connection per stream would cost a Redis connection per browser; this costs one per worker.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import redis

from . import signals
from .job import Job

log = logging.getLogger("epm.sse")

#: put on every stream's queue when the hub's connection came back: events may have been missed
RESYNC = object()
#: put on every stream's queue when the process stops: streams end, browsers reconnect elsewhere
CLOSE = object()


@dataclass(frozen=True, slots=True)
class Message:
    """One job event, rendered once to the SSE wire format and shared by every stream that sends it."""

    job_id: str
    seq: int
    terminal: bool
    wire: bytes

    @classmethod
    def from_payload(cls, payload: str) -> Message:
        data = json.loads(payload)
        return cls(job_id=data["id"], seq=int(data["seq"]), terminal=bool(data.get("terminal")),
                   wire=render(payload, data["seq"]))

    @classmethod
    def from_job(cls, job: Job) -> Message:
        return cls(job_id=job.id, seq=job.seq, terminal=job.is_terminal, wire=render(job.to_json(), job.seq))


def render(data: str, event_id: int | str, event: str = "job") -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


class Subscription:
    """A stream's inbox on the hub."""

    __slots__ = ("channels", "queue", "counted")

    def __init__(self, channels: tuple[str, ...]):
        self.channels = channels
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.counted = False

    def get(self, timeout: float) -> Message | object | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


class EventHub:
    """Fans the messages of one pub/sub connection out to this process's streams."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=False)
        self._subs: dict[str, set[Subscription]] = {}
        self._ready: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.streams = 0
        self.closed = False

    def subscribe(self, *channels: str, timeout: float = 5.0) -> Subscription:
        """Follow ``channels``; returns once Redis confirmed them, so no later event is missed.

        Raises ``redis.RedisError`` when Redis cannot be reached, before anything was sent.
        """
        sub = Subscription(channels)
        waits = []
        with self._lock:
            new = []
            for channel in channels:
                members = self._subs.setdefault(channel, set())
                if not members:
                    new.append(channel)
                    self._ready[channel] = threading.Event()
                waits.append(self._ready[channel])
                members.add(sub)
            try:
                if new:
                    self._pubsub.subscribe(*new)
            except (redis.RedisError, OSError):
                self._remove(sub)
                raise
            self._ensure_listener()
        for ready in waits:
            if not ready.wait(timeout):
                self.unsubscribe(sub)
                raise redis.ConnectionError("Redis did not confirm the subscription in time")
        sub.counted = True
        self.streams += 1
        signals.stream_changed.send(self, delta=1)
        return sub

    def close(self) -> None:
        """End every stream of this process now (it is stopping) and any opened from now on."""
        self.closed = True
        self._broadcast(CLOSE)

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop following; safe to call more than once."""
        with self._lock:
            self._remove(sub)
        if sub.counted:
            sub.counted = False
            self.streams -= 1
            signals.stream_changed.send(self, delta=-1)

    def _remove(self, sub: Subscription) -> None:
        """Take ``sub`` off its channels, unsubscribing from those nobody follows any more (lock held)."""
        gone = []
        for channel in sub.channels:
            members = self._subs.get(channel)
            if members is None or sub not in members:
                continue
            members.discard(sub)
            if not members:
                del self._subs[channel]
                self._ready.pop(channel, None)
                gone.append(channel)
        if gone:
            try:
                self._pubsub.unsubscribe(*gone)
            except (redis.RedisError, OSError) as exc:
                log.warning("could not unsubscribe from %s: %s", gone, exc)

    def _ensure_listener(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._listen, daemon=True, name="epm-event-hub")
            self._thread.start()

    def _listen(self) -> None:
        broken = False
        while True:
            if broken:
                time.sleep(1.0)
                if not self._resubscribe():
                    continue
                broken = False
                log.info("event hub: Redis is back; streams re-send their snapshots")
                self._broadcast(RESYNC)
            try:
                with self._lock:
                    idle = not self._subs
                if idle:
                    time.sleep(0.5)
                    continue
                item = self._pubsub.get_message(timeout=1.0)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if not broken:
                    log.warning("event hub: lost Redis (%s); reconnecting", exc)
                    signals.backend_error.send(exc, backend="redis")
                broken = True
                continue
            if item is None:
                continue
            kind = item["type"]
            channel = item["channel"]
            if kind == "message":
                try:
                    message = Message.from_payload(item["data"])
                except (ValueError, KeyError):
                    log.warning("event hub: dropped a malformed event on %s", channel)
                    continue
                for sub in list(self._subs.get(channel, ())):
                    sub.queue.put(message)
            elif kind == "subscribe":
                ready = self._ready.get(channel)
                if ready is not None:
                    ready.set()

    def _resubscribe(self) -> bool:
        """A fresh pub/sub connection following every channel again; False while Redis is still away.

        Recovery is declared only once the channels are subscribed again: a connection that merely
        reads nothing would leave every stream silent for good.
        """
        with self._lock:
            channels = list(self._subs)
            pubsub = self.client.pubsub(ignore_subscribe_messages=False)
            try:
                if channels:
                    pubsub.subscribe(*channels)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pubsub.close()
                return False
            old, self._pubsub = self._pubsub, pubsub
        old.close()
        return True

    def _broadcast(self, item: object) -> None:
        with self._lock:
            subs = {sub for members in self._subs.values() for sub in members}
        for sub in subs:
            sub.queue.put(item)


class EventStream:
    """An event stream's response body, already subscribed: iterate it to send, ``close`` it to let go.

    The WSGI server calls ``close`` however the response ends, also when it was never iterated.
    """

    def __init__(self, hub: EventHub, sub: Subscription, events: Iterator[bytes]):
        self._hub = hub
        self._sub = sub
        self._events = events

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._hub.unsubscribe(self._sub)


def stream(hub: EventHub, channels: Iterable[str], snapshot: Callable[[], list[Job]], *,
           heartbeat: float, last_event_id: int | None = None, single_job: bool = False) -> EventStream:
    """The SSE byte stream: subscribe, send the snapshot, then newer events and heartbeats.

    ``snapshot`` gives the current state of the jobs followed. Events not newer than what a stream
    already sent for a job are skipped, so the snapshot and the live events may overlap freely. The
    one-job stream ends after the terminal event; every stream ends when the process stops.
    Subscribing and the first snapshot happen here, before the response starts, so an unreachable
    Redis raises ``redis.RedisError`` (a 503) instead of breaking a stream already answered 200.
    """
    sub = hub.subscribe(*channels)
    try:
        jobs = snapshot()
    except BaseException:
        hub.unsubscribe(sub)
        raise
    return EventStream(hub, sub, _events(hub, sub, jobs, snapshot, heartbeat, last_event_id, single_job))


class LatestSeqs(dict):
    """Job id -> the newest seq recorded; of the jobs that ended only the last ``keep_ended`` stay, and
    never more than ``limit`` entries in all (the first recorded go first).

    What a long-lived stream, or the process, remembers per job must not grow with every job that ever
    finished. An ended job forgotten costs at most a repeat of its last state, which a browser drops (its
    seq is not newer than what it holds).
    """

    def __init__(self, keep_ended: int, limit: int | None = None) -> None:
        super().__init__()
        self.keep_ended = keep_ended
        self.limit = limit
        self._ended: deque[str] = deque()

    def record(self, message: Message) -> None:
        self[message.job_id] = message.seq
        if message.terminal:
            self._ended.append(message.job_id)
            if len(self._ended) > self.keep_ended:
                self.pop(self._ended.popleft(), None)
        if self.limit is not None and len(self) > self.limit:
            del self[next(iter(self))]


#: ended jobs a stream remembers (the snapshot holds the user's 20 most recent jobs)
STREAM_KEEP_ENDED = 32


def _events(hub: EventHub, sub: Subscription, jobs: list[Job], snapshot: Callable[[], list[Job]],
            heartbeat: float, last_event_id: int | None, single_job: bool) -> Iterator[bytes]:
    sent = LatestSeqs(STREAM_KEEP_ENDED)
    try:
        yield b"retry: 2000\n\n"
        if hub.closed:
            return
        finished = False
        for job in jobs:
            if single_job and last_event_id is not None and job.seq <= last_event_id:
                sent[job.id] = job.seq
            else:
                yield _send(Message.from_job(job), sent)
            finished = finished or (single_job and job.is_terminal)
        if finished:
            return
        while True:
            item = sub.get(timeout=heartbeat)
            if item is None:
                yield b": keep-alive\n\n"
                continue
            if item is CLOSE:
                return
            if item is RESYNC:
                try:
                    jobs = snapshot()
                except Exception as exc:
                    # A backend is flapping: end the stream; the browser reconnects and gets a fresh snapshot.
                    log.info("event stream ended: no snapshot after Redis came back (%s)", exc)
                    return
                for job in jobs:
                    if job.seq > sent.get(job.id, 0):
                        yield _send(Message.from_job(job), sent)
                        if single_job and job.is_terminal:
                            return
                continue
            assert isinstance(item, Message)
            if item.seq <= sent.get(item.job_id, 0):
                continue
            signals.event_delivered.send(item)
            yield _send(item, sent)
            if single_job and item.terminal:
                return
    finally:
        hub.unsubscribe(sub)


def _send(message: Message, sent: LatestSeqs) -> bytes:
    sent.record(message)
    return message.wire
