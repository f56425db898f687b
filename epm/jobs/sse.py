"""Server-Sent Events: a snapshot of the current state, then every newer event, with heartbeats.

One Redis pub/sub connection per process (``EventHub``) carries the channels that this process's
streams follow and fans each message out to them, already rendered to the wire format once. A
connection per stream would cost a Redis connection per browser; this costs one per worker.

Under gunicorn's gevent worker a stream, once its first chunk is out, is written by the hub itself: each
event's bytes, framed as an HTTP chunk once per process, go to every following socket with one
non-blocking ``send``, without waking the stream's greenlet. Only a socket that cannot take an event whole
(its client reads slowly) hands the rest to its greenlet, which sends what queued as one chunk and then
gives the socket back to the hub. Elsewhere (the test client, another server) a stream yields its chunks
to the WSGI server as before.
"""

from __future__ import annotations

import _socket
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import redis

from .. import signals
from .job import Job

log = logging.getLogger("epm.sse")

#: put on every stream's queue when the hub's connection came back: events may have been missed
RESYNC = object()
#: put on every stream's queue when the process stops: streams end, browsers reconnect elsewhere
CLOSE = object()
#: put on every stream's queue by the hub's one timer: a stream with nothing else to send sends a keep-alive
HEARTBEAT = object()


@dataclass(frozen=True, slots=True)
class Message:
    """One job event, rendered once to the SSE wire format and shared by every stream that sends it."""

    job_id: str
    seq: int
    terminal: bool
    wire: bytes
    #: ``wire`` framed as one HTTP/1.1 chunk, for the sockets the hub writes itself (built with the message)
    chunk: bytes = b""

    @classmethod
    def from_payload(cls, payload: str) -> Message:
        data = json.loads(payload)
        wire = render(payload, data["seq"])
        return cls(job_id=data["id"], seq=int(data["seq"]), terminal=bool(data.get("terminal")), wire=wire,
                   chunk=frame(wire))

    @classmethod
    def from_job(cls, job: Job) -> Message:
        wire = render(job.to_json(), job.seq)
        return cls(job_id=job.id, seq=job.seq, terminal=job.is_terminal, wire=wire, chunk=frame(wire))


def render(data: str, event_id: int | str, event: str = "job") -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


def frame(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body, framed as gunicorn frames what a WSGI app yields."""
    return b"%X\r\n%b\r\n" % (len(data), data)


def new_event():
    """A flag one greenlet (or thread) waits on and another sets: gevent's own under gevent (a fraction of the
    memory of ``threading.Event`` made of patched locks: it is one per open stream), else ``threading``'s."""
    global _EVENT
    if _EVENT is None:
        try:
            from gevent import monkey
        except ImportError:
            _EVENT = threading.Event
        else:
            if monkey.is_module_patched("threading"):
                from gevent.event import Event as _EVENT
            else:
                _EVENT = threading.Event
    return _EVENT()


_EVENT = None


class Subscription:
    """A stream's inbox on the hub: what arrived since the stream last looked, and a flag to wake it.

    The stream waits on the flag without a timeout (no timer object per wait): the hub's one heartbeat
    timer wakes every stream of the process when a keep-alive is due.

    With a socket (``sock``, gunicorn's gevent socket, and ``raw``, the non-blocking OS socket under it) the
    hub writes events itself while ``direct`` is set: that is while nothing waits in ``pending``, so the
    bytes on the wire keep their order. Whatever the hub cannot write whole goes to ``pending`` (the rest of
    a chunk as ``Framed`` bytes) and the stream's greenlet sends it.
    """

    __slots__ = ("channels", "pending", "ready", "counted", "sent", "single_job", "job_id", "sock", "raw", "direct",
                 "hub", "snapshot", "detached", "flushing")

    def __init__(self, channels: tuple[str, ...], single_job: bool = False, sock=None, job_id: str | None = None):
        self.channels = channels
        self.pending: list = []
        self.ready = new_event()
        self.counted = False
        #: job id -> the newest seq this stream sent: older or repeated events are skipped
        self.sent = LatestSeqs(STREAM_KEEP_ENDED)
        self.single_job = single_job
        #: the one job whose events this stream takes from its channels (None: every job's)
        self.job_id = job_id
        self.sock = sock
        self.raw = getattr(sock, "_sock", None)
        self.direct = False
        # A stream handed over to the hub (``EventStream.hand_over``): no greenlet of its own; what the hub
        # cannot write is sent by a greenlet started for it (``flushing`` while one runs).
        self.hub: EventHub | None = None
        self.snapshot: Callable[[], list[Job]] | None = None
        self.detached = False
        self.flushing = False

    def put(self, item: Message | object) -> None:
        self.direct = False  # what waits here goes out first, from the stream's greenlet
        self.pending.append(item)
        if not self.detached:
            self.ready.set()
        elif not self.flushing:
            self.flushing = True
            _spawn(_flush, self)

    def drain(self) -> list[Message | object]:
        """Everything queued, oldest first; waits until there is something."""
        self.ready.wait()
        self.ready.clear()
        items, self.pending = self.pending, []
        return items

    def offer(self, message: Message) -> int:
        """Hand ``message`` to the stream: written now when the hub writes this socket, else queued.

        Returns the events delivered now (0 or 1; a queued one is counted when its stream sends it).
        """
        if self.job_id is not None and message.job_id != self.job_id:
            return 0
        if not self.direct:
            self.put(message)
            return 0
        sent = self.sent
        if message.seq <= sent.get(message.job_id, 0):
            return 0
        sent.record(message)
        self.write(message.chunk or frame(message.wire))
        if self.single_job and message.terminal:
            self.put(CLOSE)  # its last event is out: the one-job stream ends
        return 1

    def keep_alive(self) -> None:
        """The hub's timer says a keep-alive is due: written now, or queued for the stream's greenlet."""
        if self.direct:
            self.write(KEEP_ALIVE_CHUNK)
        else:
            self.put(HEARTBEAT)

    def write(self, data: bytes) -> None:
        """One non-blocking send by the hub; what the socket does not take is left to the stream's greenlet."""
        try:
            written = self.raw.send(data)
        except BlockingIOError:
            written = 0
        except OSError:
            self.put(CLOSE)  # the client is gone: the stream's greenlet ends the response
            return
        if written < len(data):
            self.put(Framed(data[written:]))


class Framed(bytes):
    """Bytes already framed for the socket (the rest of a chunk the hub began): sent as they are."""

    __slots__ = ()


class EventHub:
    """Fans the messages of one pub/sub connection out to this process's streams.

    The connection is checked every ``health_check`` seconds (a PING when nothing arrived) and
    replaced, with every channel subscribed again, as soon as it is found dead, also when a stream's
    SUBSCRIBE fails on it: a stream is not refused while Redis is up. With no stream left, the connection
    is let go, so an idle worker holds no connection that a Redis restart could leave dead.
    """

    def __init__(self, client: redis.Redis, *, heartbeat: float = 15.0, health_check: float = 5.0,
                 most_handed_over: int = 10_000):
        self.client = client
        #: streams handed over (``EventStream.hand_over``) now, and how many may be
        self.handed_over = 0
        self.most_handed_over = most_handed_over
        self.heartbeat = heartbeat
        self.health_check = health_check
        self._pubsub = _new_pubsub(client)
        self._subs: dict[str, set[Subscription]] = {}
        self._ready: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._beat_thread: threading.Thread | None = None
        self.streams = 0
        #: events handed to streams (one per stream an event reached), read by benchmarks and metrics
        self.delivered = 0
        self.closed = False

    def subscribe(self, *channels: str, timeout: float = 5.0, single_job: bool = False,
                  sock=None, job_id: str | None = None) -> Subscription:
        """Follow ``channels``; returns once Redis confirmed them, so no later event is missed.

        A connection that fails the SUBSCRIBE is replaced at once and the subscription tried again on the
        new one. Raises ``redis.RedisError`` when Redis cannot be reached, before anything was sent.
        ``sock``: the client's socket, which the hub may write itself (see ``Subscription``); ``job_id``:
        only that job's events are handed to the stream.
        """
        sub = Subscription(channels, single_job, sock, job_id)
        with self._lock:
            new = []
            for channel in channels:
                members = self._subs.setdefault(channel, set())
                if not members:
                    new.append(channel)
                    self._ready[channel] = new_event()
                members.add(sub)
            waits = [self._ready[channel] for channel in channels]
            try:
                if new:
                    try:
                        self._pubsub.subscribe(*new)
                    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                        log.info("event hub: pub/sub connection found dead on subscribe (%s); replacing it", exc)
                        self._replace_connection()
            except (redis.RedisError, OSError):
                self._remove(sub)
                raise
            self._ensure_threads()
        # A connection that took the SUBSCRIBE but is dead (its server restarted) fails the listener's next
        # read, which replaces it and subscribes every channel again: the confirmation comes from there.
        # A slow confirmation is not a dead connection (a busy worker): it is not replaced for that.
        if not _all_set(waits, timeout):
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
        if not gone:
            return
        if not self._subs:
            # Nobody follows anything: let the connection go (the next stream takes a fresh one).
            old, self._pubsub = self._pubsub, _new_pubsub(self.client)
            _close_quietly(old)
            return
        try:
            self._pubsub.unsubscribe(*gone)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not unsubscribe from %s: %s", gone, exc)

    def _replace_connection(self) -> None:
        """A fresh pub/sub connection following every channel (lock held); raises while Redis is away.

        The streams already open may have missed events on the old connection: they re-send snapshots.
        """
        pubsub = _new_pubsub(self.client)
        channels = list(self._subs)
        try:
            if channels:
                pubsub.subscribe(*channels)
        except (redis.RedisError, OSError):
            _close_quietly(pubsub)
            raise
        old, self._pubsub = self._pubsub, pubsub
        _close_quietly(old)
        for members in self._subs.values():
            for sub in members:
                sub.put(RESYNC)

    def _ensure_threads(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._listen, daemon=True, name="epm-event-hub")
            self._thread.start()
        if self._beat_thread is None or not self._beat_thread.is_alive():
            self._beat_thread = threading.Thread(target=self._beat, daemon=True,
                                                 name=f"epm-event-hub-beat-{id(self):x}")
            self._beat_thread.start()

    def _beat(self) -> None:
        """The process's one keep-alive timer: a keep-alive on every stream each ``heartbeat`` seconds, while
        there are any. The beats keep their times: writing to thousands of streams takes a while, and the
        next beat does not wait that long again."""
        due = time.monotonic()
        while not self.closed:
            due = max(due + self.heartbeat, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))
            with self._lock:
                if not self._subs:
                    self._beat_thread = None  # the next stream starts it again (under the same lock)
                    return
            self._keep_alive()

    def _listen(self) -> None:
        broken = False
        quiet_since = time.monotonic()
        pinged: float | None = None
        while True:
            if broken:
                with self._lock:
                    try:
                        self._replace_connection()
                    except (redis.RedisError, OSError):
                        pass
                    else:
                        broken = False
                if broken:
                    time.sleep(1.0)
                    continue
                log.info("event hub: Redis is back; streams re-send their snapshots")
                quiet_since, pinged = time.monotonic(), None
            with self._lock:
                pubsub = self._pubsub
                idle = not self._subs
            if idle:
                time.sleep(0.2)
                quiet_since, pinged = time.monotonic(), None
                continue
            try:
                now = time.monotonic()
                if pinged is None and now - quiet_since > self.health_check:
                    pubsub.ping()
                    pinged = now
                item = _next_message(pubsub, 1.0)
                # Read first, judge after: on a busy worker the answer may have waited in the socket for
                # this greenlet's turn, and replacing a live connection re-sends every stream's snapshot.
                if item is None and pinged is not None and time.monotonic() - pinged > self.health_check:
                    raise redis.ConnectionError(f"no answer to a PING in {self.health_check:g}s")
            except Exception as exc:
                if pubsub is not self._pubsub:
                    continue  # replaced (and closed) meanwhile by a stream's subscribe or the last unsubscribe
                if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
                    log.warning("event hub: lost Redis (%s); reconnecting", exc)
                else:
                    log.exception("event hub: reading the pub/sub connection failed; reconnecting")
                signals.backend_error.send(exc, backend="redis")
                broken = True
                continue
            if item is None:
                continue
            quiet_since, pinged = time.monotonic(), None
            kind = item["type"]
            if kind == "message":
                self._fan_out(item["channel"], item["data"])
            elif kind == "subscribe":
                ready = self._ready.get(item["channel"])
                if ready is not None:
                    ready.set()

    def _fan_out(self, channel: str, payload: str) -> None:
        """Decode an event once for the whole process and hand it to every stream that follows it.

        Every stream follows its user's channel (a one-job stream too, filtered by job), so an event
        reaches the hub once, whatever the number of its streams.
        """
        subs = self._subs.get(channel)
        if not subs:
            return
        try:
            message = Message.from_payload(payload)
        except (ValueError, KeyError):
            log.warning("event hub: dropped a malformed event on %s", channel)
            return
        delivered = 0
        for sub in list(subs):
            delivered += sub.offer(message)
        self.delivered += delivered
        # Once per event and process (not per stream): the metrics' delivery latency.
        signals.event_delivered.send(message)

    def _broadcast(self, item: object) -> None:
        with self._lock:
            subs = {sub for members in self._subs.values() for sub in members}
        for sub in subs:
            sub.put(item)

    def _keep_alive(self) -> None:
        """A keep-alive on every stream of the process, written by the hub where it writes the socket."""
        with self._lock:
            subs = {sub for members in self._subs.values() for sub in members}
        for count, sub in enumerate(subs, 1):
            sub.keep_alive()
            if count % 256 == 0:
                time.sleep(0)  # let the rest of the worker run between batches of sends


def _new_pubsub(client: redis.Redis):
    """A pub/sub object whose parser hands each message over as it came: redis-py's default push handler
    logs every message at DEBUG, building the log line (``str`` of the whole message, a job's 1.5 KB state)
    before the logger discards it, a fifth of reading a message."""
    return client.pubsub(ignore_subscribe_messages=False, push_handler_func=_as_received)


def _as_received(response):
    return response


#: the kind of a pub/sub message that carries a channel's data (decoded or not)
_MESSAGE_KINDS = ("message", b"message")


def _next_message(pubsub, wait: float) -> dict | None:
    """The next message on ``pubsub``, or None after ``wait`` seconds without one.

    On a real connection it is read straight from the connection: one wait on the socket, none when the
    parser holds a message already. ``get_message`` polls the socket twice per message before reading it,
    a tenth of a worker's CPU when it delivers 10,000 events a second. hiredis keeps a reply received in
    part across a timeout, and a connection that fails raises here as it did there. fakeredis (the
    embedded default) goes through ``get_message``: its read does not time out.
    """
    conn = pubsub.connection
    if conn is None or type(conn).__module__.startswith("fakeredis"):
        return pubsub.get_message(timeout=wait)
    try:
        response = conn.read_response(timeout=wait, disconnect_on_error=False, push_request=True)
    except redis.TimeoutError:
        return None
    if response and len(response) == 3 and response[0] in _MESSAGE_KINDS:
        # A channel's message: what ``handle_message`` makes of it, without its bookkeeping (it has none for
        # messages; it also records them for redis-py's OpenTelemetry metrics, which epm does not use).
        return {"type": "message", "pattern": None, "channel": response[1], "data": response[2]}
    return pubsub.handle_message(response)


def _all_set(events: list[threading.Event], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    return all(event.wait(max(0.0, deadline - time.monotonic())) for event in events)


def _close_quietly(pubsub) -> None:
    try:
        pubsub.close()
    except (redis.RedisError, OSError) as exc:
        log.debug("event hub: closing an old pub/sub connection: %s", exc)


class EventStream:
    """An event stream's response body, already subscribed: iterate it to send, ``close`` it to let go.

    The WSGI server calls ``close`` however the response ends, also when it was never iterated. Under
    gunicorn's gevent worker ``hand_over`` sends the head itself and leaves the stream to the hub instead.
    """

    def __init__(self, hub: EventHub, sub: Subscription, head: bytes, finished: bool,
                 snapshot: Callable[[], list[Job]]):
        self._hub = hub
        self._sub = sub
        self._head = head
        self._finished = finished
        self._snapshot = snapshot
        self._events: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        if self._events is None:
            self._events = _events(self._hub, self._sub, self._head, self._finished, self._snapshot)
            self._head = b""
        return self._events

    def close(self) -> None:
        if self._sub.detached:
            return  # the hub's now
        if self._events is not None:
            self._events.close()
        self._hub.unsubscribe(self._sub)

    def hand_over(self, status: str, headers: list[tuple[str, str]]) -> bool:
        """Send the response's head and first chunk on the client's socket and leave the stream to the hub.

        From here no greenlet waits for this stream: the hub writes its events and keep-alives (as it
        does for a stream with a greenlet, see ``Subscription``), and a greenlet is started only to send
        what a socket could not take at once, to re-send a snapshot, or to end the stream. The socket is
        a duplicate of the server's: the server, told the response is handled, reads the end of the
        request side (shut here) and closes its own, and the connection stays open for the hub.
        False (nothing sent) when the stream is not for handing over: no socket, or it ends at once.
        """
        sub, sock, hub = self._sub, self._sub.sock, self._hub
        if sock is None or self._finished or self._events is not None or hub.handed_over >= hub.most_handed_over:
            return False
        lines = [f"HTTP/1.1 {status}", f"Date: {formatdate(usegmt=True)}", "Connection: close",
                 "Transfer-Encoding: chunked"]
        lines += [f"{name}: {value}" for name, value in headers if name.lower() not in _HOP_BY_HOP]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + frame(self._head)
        self._head = b""
        raw = _socket.socket(fileno=os.dup(sock.fileno()))
        raw.setblocking(False)
        sub.raw, sub.sock, sub.hub, sub.snapshot = raw, None, self._hub, self._snapshot
        # Events that arrive while the head is sent wait in ``pending`` (``flushing``: no other sender yet).
        sub.detached = sub.flushing = True
        hub.handed_over += 1
        try:
            sock.sendall(head)
            sock.shutdown(_socket.SHUT_RD)  # the server's next read ends its connection loop
        except OSError:
            sub.pending.append(CLOSE)  # the client left already: the stream ends
        if sub.pending:
            _spawn(_flush, sub)
        else:
            _flush(sub)  # nothing to send: the hub writes from here
        return True


class HandOverStreams:
    """WSGI middleware, outermost: an event stream that can be handed to the hub (``EventStream.hand_over``)
    is, and gunicorn is told the response is handled; every other response passes as it was."""

    def __init__(self, wsgi_app: Callable[..., Any]):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started: list = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            if started and started[0] is None:
                return start_response(status, headers, exc_info)  # passed through already
            started[:] = [status, headers, exc_info]
            return _no_write

        body = self.wsgi_app(environ, start)
        if type(body) is EventStream and started and started[0].startswith("200"):
            handled = _already_handled()
            if handled is not None and body.hand_over(started[0], started[1]):
                return handled
        if started:
            start_response(*started)
        started[:] = [None]
        return body


def _no_write(data: bytes) -> None:
    raise RuntimeError("the WSGI write() callable is not supported; return an iterable")


def _already_handled() -> Any:
    try:
        from gunicorn.workers.base_async import ALREADY_HANDLED
    except ImportError:
        return None
    return ALREADY_HANDLED


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade",
                         "proxy-connection", "te", "trailer"})
#: how long a socket that takes no bytes may hold back a handed-over stream's send before the stream ends
SLOW_CLIENT_SECONDS = 60.0
END_CHUNK = b"0\r\n\r\n"


def _spawn(fn: Callable[..., Any], *args: Any) -> None:
    import gevent

    gevent.spawn(fn, *args)


def _flush(sub: Subscription) -> None:
    """Send what queued for a handed-over stream, as its own greenlet would, then give the socket back to
    the hub; end the stream (its last chunk, then the socket closed) when it ends or its client left."""
    hub = sub.hub
    try:
        while True:
            items, sub.pending = sub.pending, []
            if not items:
                sub.flushing = False
                sub.direct = sub.detached
                return
            chunks, finished, events = _batch(items, sub.snapshot, sub.sent, sub.single_job)
            hub.delivered += events
            data = _framed(chunks) if chunks else b""
            if finished:
                _send_all(sub.raw, data + END_CHUNK)
                break
            if data:
                _send_all(sub.raw, data)
    except Exception as exc:  # noqa: BLE001 - a stream's end is logged, never raised into the hub
        if not isinstance(exc, OSError):
            log.exception("event stream: sending failed; the stream ends")
    _end(sub)


def _end(sub: Subscription) -> None:
    sub.detached = sub.direct = sub.flushing = False
    sub.pending = []
    sub.raw.close()
    sub.hub.handed_over -= 1
    sub.hub.unsubscribe(sub)


def _send_all(raw, data: bytes) -> None:
    """Every byte of ``data`` on a non-blocking socket, waiting (cooperatively) while the client reads."""
    from gevent.socket import wait_write

    view = memoryview(data)
    while view:
        try:
            view = view[raw.send(view):]
        except BlockingIOError:
            pass
        else:
            if not view:
                return
        wait_write(raw.fileno(), timeout=SLOW_CLIENT_SECONDS, timeout_exc=TimeoutError("client too slow"))


def stream(hub: EventHub, channels: Iterable[str], snapshot: Callable[[], list[Job]], *,
           last_event_id: int | None = None, single_job: bool = False, sock=None,
           job_id: str | None = None) -> EventStream:
    """The SSE byte stream: subscribe, send the snapshot, then newer events and the hub's heartbeats.

    ``snapshot`` gives the current state of the jobs followed. Events not newer than what a stream
    already sent for a job are skipped, so the snapshot and the live events may overlap freely. The
    one-job stream ends after the terminal event; every stream ends when the process stops.
    Subscribing and the first snapshot happen here, before the response starts, so an unreachable
    Redis raises ``redis.RedisError`` (a 503) instead of breaking a stream already answered 200.

    ``sock``: the client's socket under gunicorn's gevent worker, for a chunked HTTP/1.1 response. The
    first chunk (headers, ``retry``, the snapshot) goes out through the server as usual; from then on the
    hub writes the events to the socket itself (see ``Subscription``) and the stream's greenlet only
    sends what the hub could not, until the stream ends and the server closes the response.

    ``job_id``: only that job's events are sent (a one-job stream follows its owner's channel, which
    carries every state of the job: one subscription and one message per event for all the user's streams
    in a process).
    """
    sub = hub.subscribe(*channels, single_job=single_job, sock=sock, job_id=job_id)
    try:
        head, finished = _head(hub, sub, snapshot(), last_event_id, single_job)
    except BaseException:
        hub.unsubscribe(sub)
        raise
    return EventStream(hub, sub, head, finished, snapshot)


KEEP_ALIVE = b": keep-alive\n\n"
KEEP_ALIVE_CHUNK = frame(KEEP_ALIVE)


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
        self._ended: deque[str] | None = None  # made with the first ended job: most streams see none

    def record(self, message: Message) -> None:
        self[message.job_id] = message.seq
        if message.terminal:
            if self._ended is None:
                self._ended = deque()
            self._ended.append(message.job_id)
            if len(self._ended) > self.keep_ended:
                self.pop(self._ended.popleft(), None)
        if self.limit is not None and len(self) > self.limit:
            del self[next(iter(self))]


#: ended jobs a stream remembers (the snapshot holds the user's 20 most recent jobs)
STREAM_KEEP_ENDED = 32


def _head(hub: EventHub, sub: Subscription, jobs: list[Job], last_event_id: int | None,
          single_job: bool) -> tuple[bytes, bool]:
    """A stream's first chunk (``retry`` and the snapshot's events) and whether the stream ends with it."""
    sent = sub.sent
    first = [b"retry: 2000\n\n"]
    if hub.closed:
        return first[0], True
    finished = False
    for job in jobs:
        if single_job and last_event_id is not None and job.seq <= last_event_id:
            sent[job.id] = job.seq
        else:
            first.append(_send(Message.from_job(job), sent))
        finished = finished or (single_job and job.is_terminal)
    return b"".join(first), finished


def _events(hub: EventHub, sub: Subscription, head: bytes, finished: bool,
            snapshot: Callable[[], list[Job]]) -> Iterator[bytes]:
    sent = sub.sent
    single_job = sub.single_job
    try:
        yield head
        head = None  # an idle stream keeps nothing of its snapshot once it is sent
        sock = sub.sock
        if sock is not None and not sub.pending:
            sub.direct = True  # the server sent the head and the first chunk: the hub writes from here
        while not finished:
            # Whatever queued since the last look goes out as one chunk: one write per wake-up.
            chunks, finished, events = _batch(sub.drain(), snapshot, sent, single_job)
            hub.delivered += events
            if not chunks:
                pass
            elif sock is None:
                yield b"".join(chunks)
            else:
                sock.sendall(_framed(chunks))
            if sock is not None and not finished and not sub.pending:
                sub.direct = True
    finally:
        sub.direct = False
        hub.unsubscribe(sub)


def _framed(chunks: list[bytes]) -> bytes:
    """What the stream's greenlet writes to its socket: the rest of a chunk the hub began as it is, then
    everything else as one chunk."""
    out, body = [], []
    for chunk in chunks:
        if type(chunk) is Framed:
            if body:
                out.append(frame(b"".join(body)))
                body = []
            out.append(chunk)
        else:
            body.append(chunk)
    if body:
        out.append(frame(b"".join(body)))
    return b"".join(out)


def _batch(items: list, snapshot: Callable[[], list[Job]], sent: LatestSeqs,
           single_job: bool) -> tuple[list[bytes], bool, int]:
    """The bytes to send for ``items``, whether the stream ends after them, and how many events they hold."""
    chunks: list[bytes] = []
    events = 0
    for item in items:
        if item is HEARTBEAT:
            if not chunks:
                chunks.append(KEEP_ALIVE)
            continue
        if item is CLOSE:
            return chunks, True, events
        if type(item) is Framed:
            chunks.append(item)
            continue
        if item is RESYNC:
            try:
                jobs = snapshot()
            except Exception as exc:
                # A backend is flapping: end the stream; the browser reconnects and gets a fresh snapshot.
                log.info("event stream ended: no snapshot after Redis came back (%s)", exc)
                return chunks, True, events
            for job in jobs:
                if job.seq > sent.get(job.id, 0):
                    chunks.append(_send(Message.from_job(job), sent))
                    events += 1
                    if single_job and job.is_terminal:
                        return chunks, True, events
            continue
        if item.seq <= sent.get(item.job_id, 0):
            continue
        chunks.append(_send(item, sent))
        events += 1
        if single_job and item.terminal:
            return chunks, True, events
    if len(chunks) > 1 and chunks[0] is KEEP_ALIVE:
        chunks.pop(0)
    return chunks, False, events


def _send(message: Message, sent: LatestSeqs) -> bytes:
    sent.record(message)
    return message.wire
