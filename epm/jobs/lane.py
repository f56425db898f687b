"""A short lane to Redis for the job system's hot writes (progress reports), beside the client's pool.

A command sent through ``redis.Redis.execute_command`` passes through layers the hot write does not need:
the pool's checkout polls the socket to see that the connection is clean, the retry wrapper and the
observability hooks wrap every call, and the reply goes through the response callbacks. At 1,000 progress
reports a second in a worker they cost more than the round trip itself (measured in
docs/performance.md). The lane keeps a few connections of its own, made by the pool's connection
class with the pool's settings (address, database, password, TLS, timeouts; for Sentinel, the master
the sentinels name), and on them sends one packed command and reads its reply.

What the pool's checkout guarded against is kept: a command that fails on the wire disconnects its
connection (redis-py does), so a connection goes back to the lane either clean or closed, and a closed one
connects again when next used. A connection error on a connection that had been idle (Redis restarted,
a failover) is tried once more on a new connection, as the client's retry would; a timeout is not.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

#: connections at once, kept open once made (a connection made per write would cost more than the write);
#: past this a write goes through the client's pool instead
MOST = 32


class Lane:
    """Send single commands on connections of its own; ``None`` from ``for_client`` when it cannot."""

    def __init__(self, client: redis.Redis):
        pool = client.connection_pool
        self._client = client
        self._connection_class = pool.connection_class
        self._kwargs = pool.connection_kwargs
        self._idle: list[Any] = []
        self._open = 0
        self._lock = threading.Lock()  # the bookkeeping only, never held across I/O
        self._pid = os.getpid()

    @classmethod
    def for_client(cls, client: Any) -> Lane | None:
        """A lane beside a real Redis client's pool; None for fakeredis (which has no wire to save on)."""
        if getattr(client, "connection_pool", None) is None or type(client).__module__.startswith("fakeredis"):
            return None
        return cls(client)

    def execute(self, *args: Any) -> Any:
        """One command, its reply decoded as the client decodes; raises what redis-py raises."""
        connection, fresh = self._take()
        if connection is None:
            return self._client.execute_command(*args)
        return self._round_trip(connection, fresh, connection.pack_command(*args))

    def send(self, packed: bytes) -> Any:
        """One command packed by the caller (RESP bytes, for a hot write that packs its fixed part once)."""
        connection, fresh = self._take()
        if connection is None:
            # Every lane connection is busy: one of the pool's, as the client would take it.
            pool = self._client.connection_pool
            connection = pool.get_connection()
            try:
                connection.send_packed_command((packed,))
                return connection.read_response()
            finally:
                pool.release(connection)
        return self._round_trip(connection, fresh, (packed,))

    def _take(self) -> tuple[Any, bool]:
        """An idle connection, or a new one (``fresh``); None when ``MOST`` are in use."""
        if self._pid != os.getpid():  # forked (a preloading server): the parent's sockets are not ours
            self._idle, self._open, self._lock, self._pid = [], 0, threading.Lock(), os.getpid()
        with self._lock:
            if self._idle:
                return self._idle.pop(), False
            if self._open >= MOST:
                return None, True
            self._open += 1
        return self._connection_class(**self._kwargs), True

    def _round_trip(self, connection: Any, fresh: bool, packed: Any) -> Any:
        try:
            try:
                connection.send_packed_command(packed, check_health=False)
                return connection.read_response()
            except redis.ConnectionError:
                if fresh:
                    raise
                # An idle connection that broke meanwhile (redis-py closed it): once more, connecting again.
                connection.send_packed_command(packed, check_health=False)
                return connection.read_response()
        finally:
            with self._lock:
                self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for connection in idle:
            connection.disconnect()
