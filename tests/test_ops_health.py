"""``/healthz`` and ``/readyz`` on a real gunicorn server whose Redis and PostgreSQL go away and come back.

Redis is a throw-away ``redis-server`` of this module (tests/fault_support.py), stopped and started again;
PostgreSQL is the shared server seen through a TCP proxy of this module, which a test cuts and restores.
The shared servers themselves are never touched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.fault_support import RedisServer
from tests.support import LiveServer, PostgresDatabase, free_port, real_backends, upgrade_database, wait_for

pytestmark = pytest.mark.live


class TcpProxy:
    """Forwards a local port to a TCP server; ``cut`` refuses new connections and drops the open ones."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = free_port()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> TcpProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._listener.settimeout(0.05)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while listener.fileno() != -1:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """The database host is gone: nothing listens, and every open connection is reset."""
        self._listener.close()
        with self._lock:
            connections, self._open = self._open, set()
        for end in connections:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@pytest.fixture(scope="module")
def redis_server():
    if real_backends() is None:
        pytest.skip("real backends not configured: set REDIS_URL and DATABASE_URL (.ci/run does)")
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_proxy():
    if real_backends() is None:
        pytest.skip("real backends not configured: set REDIS_URL and DATABASE_URL (.ci/run does)")
    database = PostgresDatabase(real_backends()[1])
    upgrade_database(database.url)
    parts = urlsplit(database.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname,
                                  f"127.0.0.1:{proxy.port}")
    proxy.url = urlunsplit(parts._replace(netloc=netloc))
    yield proxy
    proxy.cut()
    database.drop()


@pytest.fixture(scope="module")
def server(redis_server, postgres_proxy):
    env = {"REDIS_URL": redis_server.url, "DATABASE_URL": postgres_proxy.url, "SECRET_KEY": "ops-health",
           "EPM_KEY_PREFIX": f"epmhealth:{uuid.uuid4().hex[:8]}:", "EPM_REDIS_TIMEOUT": "1",
           "EPM_READY_TIMEOUT": "0.5", "EPM_DB_CONNECT_TIMEOUT": "1", "LOG_LEVEL": "WARNING"}
    live = LiveServer(env, workers=1).start()
    yield live
    live.stop()


def readyz(server: LiveServer) -> httpx.Response:
    return httpx.get(server.url + "/readyz", timeout=5)


def ready(server: LiveServer) -> bool:
    return readyz(server).status_code == 200


def test_readyz_is_200_when_redis_and_postgres_answer(server):
    response = readyz(server)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "redis": "ok", "database": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


def test_readyz_is_503_naming_redis_while_it_is_stopped_and_200_once_it_is_back(server, redis_server):
    wait_for(lambda: ready(server), 10, 0.1, "the server to be ready")
    redis_server.stop()
    try:
        response = readyz(server)
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "redis": "down", "database": "ok"}
        assert httpx.get(server.url + "/healthz").status_code == 200, "the process itself is fine: no restart"
    finally:
        redis_server.start()
    wait_for(lambda: ready(server), 10, 0.1, "/readyz to answer 200 with Redis back")


def test_readyz_says_timeout_within_its_limit_when_redis_hangs(server, redis_server):
    wait_for(lambda: ready(server), 10, 0.1, "the server to be ready")
    redis_server.pause()
    try:
        began = time.monotonic()
        response = readyz(server)
        assert response.status_code == 503 and response.json()["redis"] == "timeout"
        assert time.monotonic() - began < 2, "EPM_READY_TIMEOUT (0.5 s) bounds the check"
    finally:
        redis_server.resume()
    wait_for(lambda: ready(server), 10, 0.1, "/readyz to answer 200 with Redis answering again")


def test_readyz_is_503_naming_the_database_while_postgres_is_unreachable_and_200_after(server, postgres_proxy):
    wait_for(lambda: ready(server), 10, 0.1, "the server to be ready")
    postgres_proxy.cut()
    try:
        response = readyz(server)
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "redis": "ok", "database": "down"}
    finally:
        postgres_proxy.start()
    wait_for(lambda: ready(server), 10, 0.1, "/readyz to answer 200 with PostgreSQL back")
