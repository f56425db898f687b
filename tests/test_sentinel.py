"""Redis Sentinel on real servers: a master fails over to its replica while jobs run.

The test starts a master, one replica and three sentinels on loopback ports (tests/fault_support.py)
and a gunicorn server that finds the master through the sentinels (``REDIS_SENTINELS``).
"""

from __future__ import annotations

import pytest

from tests.fault_support import (  # backends: for its PostgreSQL; its standalone Redis stays unused
    SentinelCluster,
    start_demo,
    wait_running,
)
from tests.support import wait_for

pytestmark = pytest.mark.live


@pytest.fixture
def cluster():
    own = SentinelCluster()
    yield own.start()
    own.close()


def test_a_master_failover_mid_job_loses_no_job_and_every_stream_sees_the_end(cluster, backends, fleet):
    # A heartbeat timeout longer than a failover: running jobs are not taken for dead meanwhile.
    env = backends.env(REDIS_URL="", REDIS_SENTINELS=cluster.addresses,
                       REDIS_SENTINEL_MASTER=SentinelCluster.MASTER_NAME, EPM_HEARTBEAT_TIMEOUT="6")
    server = fleet.server(env, workers=2)
    assert f"through the sentinels {cluster.addresses}" in server.log()
    users = [fleet.user(server.url) for _ in range(3)]
    jobs = [start_demo(user, steps=24, step_seconds=0.3)[0] for user in users]
    streams = [fleet.stream(server.url, user, f"/api/background-jobs/{job['id']}/events")
               for user, job in zip(users, jobs, strict=True)]
    for user, job in zip(users, jobs, strict=True):
        wait_running(user, job["id"])
    first_master = cluster.master_port()

    cluster.master.stop()  # kill -9: the replica must take over
    wait_for(lambda: cluster.master_port() == cluster.replica.port, 30, 0.2, "the sentinels to fail over")

    for user, job, stream in zip(users, jobs, streams, strict=True):
        done = wait_for(lambda u=user, j=job: (s := _state(u, j["id"])) and s["terminal"] and s, 40, 0.2,
                        f"job {job['id']} to end after the failover")
        assert (done["status"], done["result"]["steps"]) == ("completed", 24), done
        wait_for(lambda s=stream, j=job: s.saw(j["id"], status="completed"), 15, 0.1,
                 "the job's stream to see the end")
    rows = backends.rows([job["id"] for job in jobs])
    assert {row["status"] for row in rows.values()} == {"completed"} and len(rows) == len(jobs)
    assert first_master != cluster.master_port()
    assert "reaper: job" not in server.log(), "no running job was taken for dead during the failover"


def _state(user, job_id: str) -> dict | None:
    """The job as the API shows it, or None while the API is still failing over (503)."""
    response = user.get(f"/api/background-jobs/{job_id}")
    return response.json()["job"] if response.status_code == 200 else None
