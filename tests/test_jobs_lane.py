"""The store's lane to Redis (epm/jobs/lane.py): its batches, a restart, a hung server, a killed caller, the pool's
settings.

Each test starts a redis-server of its own (tests/fault_support.py): they restart and freeze it.
"""

from __future__ import annotations

import threading

import fakeredis
import pytest
import redis

from epm.jobs import lane as lane_module
from epm.jobs.job import Job, JobStatus, iso, next_seq, utcnow
from epm.jobs.lane import Lane
from epm.jobs.store import Guard, JobStore
from tests.fault_support import RedisServer
from tests.support import wait_for


@pytest.fixture
def server():
    own = RedisServer().start()
    yield own
    own.stop()


PING = b"*1\r\n$4\r\nPING\r\n"


def _client(url: str, **kwargs) -> redis.Redis:
    settings = {"decode_responses": True, "socket_timeout": 1, "socket_connect_timeout": 1, **kwargs}
    pool = redis.BlockingConnectionPool.from_url(url, **settings)
    return redis.Redis.from_pool(pool)


def _lane_clients(control: redis.Redis, name: str) -> list[dict]:
    return [c for c in control.client_list() if c["name"] == name]


def test_a_command_on_the_lane_uses_the_pools_settings_and_decodes_as_the_client(server):
    client = _client(server.url.replace("/0", "/3"), client_name="lane-test")
    lane = Lane.for_client(client)
    assert lane.execute("SET", "k", "é") == "OK"  # the raw reply: no response callbacks
    assert lane.execute("GET", "k") == "é"  # decoded, as the client decodes
    with server.client() as control:
        assert control.get("k") is None  # database 0: the lane wrote to the URL's database 3
        (seen,) = _lane_clients(control, "lane-test")
        assert seen["db"] == "3"
    with pytest.raises(redis.ResponseError):
        lane.execute("INCR", "k")  # an error reply leaves the connection clean: it is kept
    assert lane.execute("GET", "k") == "é"
    lane.close()


def test_the_lane_connects_again_after_a_restart_and_raises_while_redis_is_down(server):
    client = _client(server.url)
    lane = Lane.for_client(client)
    assert lane.execute("PING") == "PONG"
    server.restart()  # the idle connection is now dead: the next command is tried once on a new one
    assert lane.execute("PING") == "PONG"
    server.restart()
    assert lane.send(PING) == "PONG"  # a command packed by the caller too
    server.stop()
    with pytest.raises(redis.ConnectionError):
        lane.execute("PING")
    server.start()
    assert lane.execute("PING") == "PONG"
    lane.close()


def test_a_hung_redis_times_out_and_the_lane_recovers(server):
    client = _client(server.url)
    lane = Lane.for_client(client)
    assert lane.execute("PING") == "PONG"
    server.pause()
    try:
        with pytest.raises(redis.TimeoutError):
            lane.execute("PING")  # the pool's socket_timeout (1 s) holds on the lane too; not tried again
    finally:
        server.resume()
    assert lane.execute("PING") == "PONG"  # the timed-out connection was closed: no stale reply is read
    lane.close()


class _Callers:
    """Threads that each send one command on the lane while its first batch is held on the wire (the
    server is frozen), so that they queue behind it; ``results`` maps a caller to its reply or exception."""

    def __init__(self, lane: Lane):
        self.lane = lane
        self.results: dict[str, object] = {}
        self.threads: list[threading.Thread] = []

    def send(self, name: str, *command) -> None:
        def call():
            try:
                self.results[name] = self.lane.execute(*command)
            except BaseException as exc:  # noqa: BLE001 -- what the caller saw, checked by the test
                self.results[name] = exc
        thread = threading.Thread(target=call, name=name)
        self.threads.append(thread)
        thread.start()

    def wait_queued(self, count: int) -> None:
        wait_for(lambda: len(self.lane._waiting or ()) == count, 10, 0.01, f"{count} callers queued on the lane")

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


def test_callers_at_once_share_one_connection_and_those_that_wait_go_as_one_batch(server):
    client = _client(server.url, client_name="lane-batch", socket_timeout=10)
    lane = Lane.for_client(client)
    assert lane.execute("PING") == "PONG"
    callers = _Callers(lane)
    server.pause()
    try:
        callers.send("first", "INCR", "n")  # on the wire, unanswered while the server is frozen
        wait_for(lambda: lane._waiting == [], 10, 0.01, "the first command on the wire")
        for index in range(9):
            callers.send(f"queued-{index}", "INCR", "n")
        callers.wait_queued(9)
    finally:
        server.resume()
    callers.join()
    assert callers.results["first"] == 1
    assert sorted(callers.results[f"queued-{index}"] for index in range(9)) == list(range(2, 11))
    # The PING, the first INCR, then the nine as one batch: three round trips for eleven commands.
    assert (lane.batches, lane.commands) == (3, 11)
    assert lane._waiting is None  # nothing on the wire: the next caller sends at once
    with server.client() as control:
        assert len(_lane_clients(control, "lane-batch")) == 1
        assert control.get("n") == "10"
    for _ in range(20):  # one after another: each goes at once, on the same connection
        lane.execute("INCR", "n")
    assert (lane.batches, lane.commands) == (23, 31)
    lane.close()
    client.close()


def test_an_error_reply_in_a_batch_is_its_own_commands(server):
    client = _client(server.url, socket_timeout=10)
    lane = Lane.for_client(client)
    lane.execute("SET", "text", "not a number")
    callers = _Callers(lane)
    server.pause()
    try:
        callers.send("first", "PING")
        wait_for(lambda: lane._waiting == [], 10, 0.01, "the first command on the wire")
        callers.send("before", "INCR", "n")
        callers.wait_queued(1)
        callers.send("wrong", "INCR", "text")
        callers.wait_queued(2)
        callers.send("after", "GET", "text")
        callers.wait_queued(3)
    finally:
        server.resume()
    callers.join()
    assert callers.results["first"] == "PONG" and callers.results["before"] == 1
    assert isinstance(callers.results["wrong"], redis.ResponseError)
    assert callers.results["after"] == "not a number"
    assert lane.execute("INCR", "n") == 2  # the connection stayed clean
    lane.close()
    client.close()


def test_a_batch_on_a_server_that_dies_fails_and_the_lane_connects_again(server):
    client = _client(server.url, socket_timeout=10)
    lane = Lane.for_client(client)
    assert lane.execute("PING") == "PONG"
    callers = _Callers(lane)
    server.pause()
    callers.send("first", "PING")
    wait_for(lambda: lane._waiting == [], 10, 0.01, "the first command on the wire")
    callers.send("queued-1", "PING")
    callers.send("queued-2", "PING")
    callers.wait_queued(2)
    server.stop()  # the batch on the wire gets no reply; tried once more, the server refuses
    callers.join()
    assert all(isinstance(callers.results[name], redis.ConnectionError) for name in ("first", "queued-1", "queued-2"))
    assert lane._waiting is None
    server.start()
    assert lane.execute("PING") == "PONG"
    lane.close()
    client.close()


class _Killed(BaseException):
    """Stands for gevent's GreenletExit: the waiting caller is stopped."""


@pytest.mark.parametrize("when", ["before the lead reaches it", "as the lead reaches it"])
def test_a_caller_killed_while_waiting_does_not_stop_the_ones_behind_it(server, monkeypatch, when):
    client = _client(server.url, socket_timeout=10)
    lane = Lane.for_client(client)
    assert lane.execute("PING") == "PONG"
    victim_waiting = threading.Event()
    kill_now = threading.Event()

    class Event(threading.Event):
        def wait(self, timeout=None):
            if threading.current_thread().name != "victim":
                return super().wait(timeout)
            victim_waiting.set()
            if when == "before the lead reaches it":
                kill_now.wait(10)
            else:
                super().wait(timeout)  # the lead is passed to it, then it is killed
            raise _Killed()

    monkeypatch.setattr(lane_module.threading, "Event", Event)
    callers = _Callers(lane)
    server.pause()
    try:
        callers.send("first", "INCR", "n")
        wait_for(lambda: lane._waiting == [], 10, 0.01, "the first command on the wire")
        callers.send("victim", "INCR", "n")
        callers.wait_queued(1)
        assert victim_waiting.wait(10)
        callers.send("behind", "INCR", "n")
        callers.wait_queued(2)
        if when == "before the lead reaches it":
            kill_now.set()
            wait_for(lambda: lane._waiting[0].gone, 10, 0.01, "the victim gone")
    finally:
        server.resume()
    callers.join()
    assert isinstance(callers.results["victim"], _Killed)
    assert callers.results["first"] == 1
    # Killed before the lead reached it, its command is dropped; after, it is sent by a thread of the lane's.
    assert callers.results["behind"] == (2 if when == "before the lead reaches it" else 3)
    wait_for(lambda: lane._waiting is None, 10, 0.01, "the lane idle")
    assert lane.execute("INCR", "n") == callers.results["behind"] + 1
    lane.close()
    client.close()


def _busy(lane: Lane, server) -> None:
    """Leave ``lane`` busy: its last batch carried two commands (queued behind a first, held on the wire)."""
    callers = _Callers(lane)
    server.pause()
    try:
        callers.send("held", "PING")
        wait_for(lambda: lane._waiting == [], 10, 0.01, "the first command on the wire")
        callers.send("queued-1", "PING")
        callers.send("queued-2", "PING")
        callers.wait_queued(2)
    finally:
        server.resume()
    callers.join()
    assert lane._last_batch[1] == 2


def test_a_busy_lane_lingers_for_the_commands_about_to_come_and_a_lone_caller_does_not_wait(server):
    client = _client(server.url, socket_timeout=10)
    lane = Lane.for_client(client, linger=3.0)
    for _ in range(20):  # one caller after another: every batch carries one command, none waits
        lane.execute("INCR", "n")
    assert (lane.batches, lane.lingered) == (20, 0)
    _busy(lane, server)
    batches = lane.batches
    callers = _Callers(lane)
    callers.send("lingering", "INCR", "n")  # finds nothing on the wire, but the lane is busy: it waits
    for index in range(3):
        callers.send(f"came-{index}", "INCR", "n")
    callers.wait_queued(3)
    callers.join()
    assert lane.batches == batches + 1 and lane.lingered == 1  # the four went as one batch
    assert sorted(callers.results.values()) == [21, 22, 23, 24]
    for _ in range(5):  # alone again: the first waits once more (the lane's last batch carried four), no other
        lane.execute("INCR", "n")
    assert lane.lingered == 2 and lane.batches == batches + 6
    lane.close()
    client.close()


def test_a_caller_killed_while_lingering_still_sends_the_batch(server, monkeypatch):
    client = _client(server.url, socket_timeout=10)
    lane = Lane.for_client(client, linger=3.0)
    assert lane.execute("SET", "n", 0)
    _busy(lane, server)
    came = threading.Event()
    real_sleep = lane_module.time.sleep

    def sleep(seconds):
        if threading.current_thread().name != "victim":
            return real_sleep(seconds)
        came.wait(10)
        raise _Killed()

    monkeypatch.setattr(lane_module.time, "sleep", sleep)
    callers = _Callers(lane)
    callers.send("victim", "INCR", "n")
    wait_for(lambda: lane._waiting == [], 10, 0.01, "the victim lingering")
    callers.send("behind", "INCR", "n")
    callers.wait_queued(1)
    came.set()
    callers.join()
    assert isinstance(callers.results["victim"], _Killed)
    assert callers.results["behind"] == 2  # the victim's command went too, in the batch it led
    wait_for(lambda: lane._waiting is None, 10, 0.01, "the lane idle")
    lane.close()
    client.close()


def test_no_lane_for_fakeredis():
    assert Lane.for_client(fakeredis.FakeRedis()) is None


def test_the_hot_scripts_load_again_after_redis_lost_them(server):
    """Progress and heartbeat go by SHA on the lane; a SCRIPT FLUSH (or a restart) makes Redis forget them."""
    client = _client(server.url)
    store = JobStore(client, prefix="t:")
    job = Job(id="j1", job_type="demo_countdown", user_id="7", title="Demo", status=JobStatus.RUNNING,
              seq=next_seq(0), created_at=iso(utcnow()))
    store.write(job, Guard.RECORD)
    for round_ in range(2):
        job.progress, job.seq, job.updated_at = 10 + round_, next_seq(job.seq), iso(utcnow())
        assert store.save_progress(job) is True
        beat = store.heartbeat(job)
        assert (beat.status, beat.attempt, beat.cancel) == (JobStatus.RUNNING, 1, False)
        assert client.hget("t:job:j1", "progress") == str(job.progress)
        client.script_flush()
    store.request_cancel("j1")
    assert store.heartbeat(job).cancel is True
