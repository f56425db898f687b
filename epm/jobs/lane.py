"""A short lane to Redis for the job system's hot writes (progress, heartbeats, checkpoints), beside the pool.

A command sent through ``redis.Redis.execute_command`` passes through layers the hot write does not need:
the pool's checkout polls the socket to see that the connection is clean, the retry wrapper and the
observability hooks wrap every call, and the reply goes through the response callbacks. At 1,000 progress
reports a second in a worker they cost more than the round trip itself (measured in
docs/performance.md). The lane has one connection of its own, made by the pool's connection class with
the pool's settings (address, database, password, TLS, timeouts; for Sentinel, the master the sentinels
name), and on it sends packed commands and reads their replies.

**One batch on the wire at a time (group commit).** A command given while none is on the wire goes at
once, in the caller's own thread: a lone write costs what a bare round trip costs. Commands given while a
batch is on the wire wait, and go together as the next batch, one ``send`` and their replies read in
order; the first of them sends it (the lead passes to it), so no thread of the lane's own stands between
a caller and Redis. **Linger:** when the lane is busy (its last batch carried more than one command and
went less than ``linger`` ago), a command that finds nothing on the wire waits ``linger`` (5 ms by
default, ``EPM_WRITE_LINGER``) for the ones that are about to come, as Kafka's producer does with
``linger.ms``. A lone caller, or a quiet process, does not wait (the first write after a burst may, once).
With 50 jobs reporting 10 times a second in a worker a batch carried about 2 commands without the linger
and 7-9 with it, and the CPU per delivered event fell by about a third (docs/performance.md, section 2):
fewer wake-ups, system calls and Redis round trips per report, in the worker, in Redis, and in the event
hubs, which read a batch's events in one go.

What the pool's checkout guarded against is kept: a command that fails on the wire disconnects the
connection (redis-py does), so the next batch finds it either clean or closed, and a closed one connects
again. A connection error before any reply, on a connection that had answered before (Redis restarted, a
failover), sends the batch once more on a new connection, as the client's retry would; a timeout does not.
An error reply (``ResponseError``, ``NoScriptError``) is its own command's and leaves the others alone.
Only short commands belong here: a blocking one would hold every write of the process behind it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

_UNSET = object()


class _Slot:
    """One command given to the lane, waiting for its reply (or for the lead)."""

    __slots__ = ("packed", "reply", "done", "batch", "gone")

    def __init__(self, packed: bytes):
        self.packed = packed
        self.reply: Any = _UNSET  # the decoded reply, or the exception to raise in the caller
        self.done: threading.Event | None = None  # made only for a caller that waits
        self.batch: list[_Slot] | None = None  # the lead passed to this caller: the batch it sends
        self.gone = False  # the caller stopped waiting (killed): the lead is not passed to it

    def result(self) -> Any:
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply


class Lane:
    """Send short commands on a connection of its own; ``None`` from ``for_client`` when it cannot."""

    def __init__(self, client: redis.Redis, linger: float = 0.0):
        pool = client.connection_pool
        self.linger = linger
        self._connection_class = pool.connection_class
        self._kwargs = pool.connection_kwargs
        self._reset()
        #: batches and commands sent since the lane was made, and the batches that waited for more (for tests
        #: and benchmarks)
        self.batches = 0
        self.commands = 0
        self.lingered = 0

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()  # the bookkeeping only, never held across I/O
        self._connection = self._connection_class(**self._kwargs)  # connects when first used
        self._proven = False  # it answered since it last connected: a connection error is worth one retry
        self._waiting: list[_Slot] | None = None  # None: no batch on the wire; else the next batch
        self._last_batch = (float("-inf"), 0)  # when the last batch went (monotonic) and its commands

    @classmethod
    def for_client(cls, client: Any, linger: float = 0.0) -> Lane | None:
        """A lane beside a real Redis client's pool; None for fakeredis (which has no wire to save on)."""
        if getattr(client, "connection_pool", None) is None or type(client).__module__.startswith("fakeredis"):
            return None
        return cls(client, linger)

    def execute(self, *args: Any) -> Any:
        """One command, its reply decoded as the client decodes; raises what redis-py raises."""
        return self.send(b"".join(self._connection.pack_command(*args)))

    def send(self, packed: bytes) -> Any:
        """One command packed by the caller (RESP bytes, for a hot write that packs its fixed part once)."""
        slot = _Slot(packed)
        with self._lock:
            if self._pid != os.getpid():  # forked (a preloading server): the parent's socket is not ours
                self._reset()
            if self._waiting is None:
                self._waiting = []  # this caller's batch is on the wire: the next ones wait
                lead = [slot]
                went, carried = self._last_batch
                linger = self.linger if carried > 1 and time.monotonic() - went < self.linger else 0.0
            else:
                slot.done = threading.Event()
                self._waiting.append(slot)
                lead = None
        if lead is None:
            try:
                slot.done.wait()
            except BaseException:
                # Killed while waiting: if the lead came or comes to this caller, another thread sends it.
                with self._lock:
                    slot.gone = True
                    lead = slot.batch
                if lead is not None and slot.reply is _UNSET:
                    self._lead_elsewhere(lead)
                raise
            lead = slot.batch
        elif linger:
            try:
                time.sleep(linger)  # busy: the commands about to come go with this one
            except BaseException:
                self._lead_elsewhere(self._gather(lead))  # killed while lingering: the batch still goes
                raise
            lead = self._gather(lead)
            self.lingered += 1
        if lead is not None:
            self._lead(lead)
        return slot.result()

    def _gather(self, lead: list[_Slot]) -> list[_Slot]:
        """The lingering caller's batch: its command and those that came meanwhile."""
        with self._lock:
            batch, self._waiting = lead + self._waiting, []
        return batch

    def _lead_elsewhere(self, batch: list[_Slot]) -> None:
        """The caller that holds the lead was killed: a short-lived thread sends its batch and passes the lead on."""
        threading.Thread(target=self._lead, args=(batch,), daemon=True, name="lane-lead").start()

    def _lead(self, batch: list[_Slot]) -> None:
        """Send ``batch`` and hand its replies out; then pass the lead to the first of those that came meanwhile."""
        try:
            self._round_trip(batch)
        finally:
            for slot in batch:
                if slot.reply is _UNSET:  # interrupted (the leading thread was killed): no reply will come
                    slot.reply = redis.ConnectionError("the lane's batch was interrupted")
                if slot.done is not None:
                    slot.done.set()
            with self._lock:
                following = [slot for slot in self._waiting or () if not slot.gone]
                self._waiting = [] if following else None
                if following:
                    following[0].batch = following
            if following:
                following[0].done.set()

    def _round_trip(self, batch: list[_Slot]) -> None:
        connection = self._connection
        packed = batch[0].packed if len(batch) == 1 else b"".join(slot.packed for slot in batch)
        self.batches += 1
        self.commands += len(batch)
        self._last_batch = (time.monotonic(), len(batch))
        retry = self._proven
        while True:
            answered = 0
            try:
                connection.send_packed_command((packed,), check_health=False)
                for slot in batch:
                    try:
                        slot.reply = connection.read_response()
                    except redis.ResponseError as exc:  # an error reply: the connection is clean
                        slot.reply = exc
                    answered += 1
                self._proven = True
                return
            except redis.RedisError as exc:
                # redis-py closed the connection. A connection error (not a timeout) before any reply, on a
                # connection that had answered, sends the batch once more on a new one (Redis restarted, a
                # failover): nothing in it was run.
                self._proven = False
                if retry and not answered and isinstance(exc, redis.ConnectionError):
                    retry = False
                    continue
                for slot in batch[answered:]:
                    slot.reply = exc
                return
            except BaseException:
                connection.disconnect()  # killed mid-batch: unread replies must not be read by the next one
                raise

    def close(self) -> None:
        self._connection.disconnect()
