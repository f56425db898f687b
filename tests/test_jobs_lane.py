"""The store's lane to Redis (epm/jobs/lane.py): its connections, a restart, a hung server, the pool's settings.

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
    pool = redis.BlockingConnectionPool.from_url(url, decode_responses=True, socket_timeout=1,
                                                 socket_connect_timeout=1, **kwargs)
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


def test_a_burst_opens_at_most_its_share_of_connections_and_keeps_them(server, monkeypatch):
    monkeypatch.setattr(lane_module, "MOST", 8)
    client = _client(server.url, client_name="lane-burst")
    lane = Lane.for_client(client)
    replies: list = []
    blocked = [threading.Thread(target=lambda: replies.append(lane.execute("BLPOP", "go", 30)))
               for _ in range(10)]
    with server.client() as control:
        for thread in blocked:
            thread.start()
        # Eight wait on connections of the lane; the ninth and tenth went through the client's pool.
        wait_for(lambda: len([c for c in control.client_list() if "b" in c["flags"]]) == 10, 10, 0.02,
                 "ten blocked BLPOPs")
        assert lane._open == 8
        control.lpush("go", *range(10))
        for thread in blocked:
            thread.join(10)
        assert len(replies) == 10
        before = {c["id"] for c in _lane_clients(control, "lane-burst")}
        assert len(before) == 10 and len(lane._idle) == 8
        for _ in range(50):  # the next writes reuse them: no connection is made per write
            assert lane.execute("PING") == "PONG"
        assert {c["id"] for c in _lane_clients(control, "lane-burst")} == before
    lane.close()
    client.close()


def test_a_packed_command_goes_through_the_pool_while_the_lane_is_full(server, monkeypatch):
    monkeypatch.setattr(lane_module, "MOST", 1)
    client = _client(server.url, client_name="lane-full")
    lane = Lane.for_client(client)
    replies: list = []
    blocked = threading.Thread(target=lambda: replies.append(lane.execute("BLPOP", "go", 30)))
    blocked.start()
    with server.client() as control:
        wait_for(lambda: any("b" in c["flags"] for c in control.client_list()), 10, 0.02, "the blocked BLPOP")
        assert lane.send(b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n") == 1
        assert lane._open == 1 and len(_lane_clients(control, "lane-full")) == 2  # the lane's and the pool's
        control.lpush("go", "x")
    blocked.join(10)
    assert replies == [["go", "x"]] and lane._open == 1
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
