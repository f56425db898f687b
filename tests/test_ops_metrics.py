"""``/metrics`` on a real gunicorn server with two workers: every scrape, whichever worker answers, counts
the jobs finished in either (prometheus_client's multiprocess mode, set up by gunicorn.conf.py)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fault_support import worker_serving
from tests.support import Browserish, LiveServer, wait_for

pytestmark = pytest.mark.live

TOKEN = "scrape-" + uuid.uuid4().hex
BATCH = 4


@pytest.fixture(scope="module")
def server(redis_url, postgres_url):
    env = {"REDIS_URL": redis_url, "DATABASE_URL": postgres_url, "SECRET_KEY": "ops-metrics",
           "EPM_KEY_PREFIX": f"epmmetrics:{uuid.uuid4().hex[:8]}:", "EPM_SSE_HEARTBEAT": "0.3",
           "METRICS_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"}
    live = LiveServer(env, workers=2).start()
    yield live
    live.stop()


def scrape(server: LiveServer) -> tuple[dict[tuple[str, tuple], float], int]:
    """Samples by (name, sorted labels) from one scrape on a new connection, and the pid of the worker that answered."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        pid = worker_serving(server, response)
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, pid


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_jobs_finished_in_either_worker_are_counted_by_a_scrape_of_either(server):
    users, workers = [], set()
    try:
        # Each job runs in the worker that took its start: go on until both workers have run some. Sessions
        # come in batches signed up at once: one after another, each connection may go to the same worker
        # (the one just woken by the last; in CI, twelve in a row did), while a worker busy hashing one
        # password leaves the next connection of a batch to the other.
        for _batch in range(8):
            with ThreadPoolExecutor(BATCH) as pool:
                batch = list(pool.map(lambda _: Browserish(server.url).signup(), range(BATCH)))
            for user in batch:
                response = user.post("/api/background-jobs", json={
                    "job_type": "demo_countdown", "params": {"steps": 3, "step_seconds": 0.02}})
                assert response.status_code == 202
                workers.add(worker_serving(server, response))
                users.append((user, response.json()["job"]["id"]))
            if len(workers) == 2:
                break
        assert len(workers) == 2, f"the jobs ran in both workers ({len(users)} jobs ran in one)"
        failing = users[0][0]
        wait_for(lambda: failing.get(f"/api/background-jobs/{users[0][1]}").json()["job"]["terminal"], 10, 0.05)
        failed = failing.post("/api/background-jobs", json={"job_type": "demo_countdown",
                                                            "params": {"steps": 2, "fail_at": 2}}).json()["job"]
        for user, job_id in [*users, (failing, failed["id"])]:
            wait_for(lambda u=user, j=job_id: u.get(f"/api/background-jobs/{j}").json()["job"]["terminal"], 10, 0.05,
                     f"job {job_id} to end")
    finally:
        for user, _ in users:
            user.close()
    finished = len(users)

    answered = set()
    for _ in range(40):
        samples, pid = scrape(server)
        answered.add(pid)
        assert value(samples, "epm_jobs_finished_total", job_type="demo_countdown", status="completed") == finished
        assert value(samples, "epm_jobs_finished_total", job_type="demo_countdown", status="failed") == 1
        assert value(samples, "epm_jobs_started_total", job_type="demo_countdown") == finished + 1
        assert value(samples, "epm_job_duration_seconds_count", job_type="demo_countdown") == finished + 1
        assert value(samples, "epm_jobs_running") == 0
        assert value(samples, "epm_jobs_active") == 0 and value(samples, "epm_outbox_depth") == 0
        assert value(samples, "epm_job_events_published_total", job_type="demo_countdown") >= 2 * (finished + 1)
        if len(answered) == 2 and _ >= 3:
            break
    assert answered == workers, "both workers answered scrapes, each with the whole server's counts"


def test_open_event_streams_are_a_gauge_summed_over_workers(server):
    user = Browserish(server.url).signup()
    opened = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        for _event in user.events("/api/background-jobs/events", timeout=10):
            opened.set()
            if stop.is_set():
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        assert opened.wait(10), "the stream opened"
        wait_for(lambda: value(scrape(server)[0], "epm_sse_streams") == 1, 5, 0.05, "one stream counted")
    finally:
        stop.set()
        reader.join(5)
        user.close()
    wait_for(lambda: value(scrape(server)[0], "epm_sse_streams") == 0, 5, 0.05, "the closed stream to be let go")


def test_metrics_need_the_bearer_token_when_one_is_set(server):
    refused = httpx.get(server.url + "/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.json()["error"]["code"] == "unauthorized" and "epm_" not in refused.text
    wrong = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    allowed = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    # A metric every worker has from its start (a job's counters appear once a job ended: another test's).
    assert allowed.status_code == 200 and "# TYPE epm_event_loop_lag_seconds histogram" in allowed.text
    assert httpx.get(server.url + "/healthz").status_code == 200, "health stays open"


def test_each_worker_reports_its_event_loop_lag(server):
    """The loop monitor runs in every worker: the scrape's lag histogram counts at least one tick per 50 ms."""

    def ticks() -> float:
        return value(scrape(server)[0], "epm_event_loop_lag_seconds_count")

    first = ticks()
    assert wait_for(lambda: ticks() >= first + 20, timeout=30, message="20 more loop ticks")
    samples, _ = scrape(server)
    assert 0 <= value(samples, "epm_event_loop_lag_max_seconds") < 30
    # Serving requests runs greenlets: the longest run between two switches is known, and short.
    assert 0 < value(samples, "epm_event_loop_block_max_seconds") < 30
