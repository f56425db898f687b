"""Running jobs hold no database connection between their reads and their final write."""

from __future__ import annotations

import pytest

from epm.extensions import db
from epm.models import StrategySession
from tests.support import wait_for


@pytest.fixture
def paced(app):
    app.config["EPM_STAGE_SECONDS"] = 0.4
    app.config["EPM_MAX_RUNNING_PER_USER"] = 50
    yield app
    app.extensions["epm.jobs"].runner.shutdown(grace=1)


def sessions(app, user, count):
    with app.app_context():
        rows = [StrategySession(user_id=user.id, name=f"Plan {n}", business="A bakery chain",
                                objectives=["Open two shops", "Launch catering"], team_size=6)
                for n in range(count)]
        db.session.add_all(rows)
        db.session.commit()
        return [str(row.id) for row in rows]


def test_jobs_between_stages_hold_no_pooled_connection(paced, user):
    service = paced.extensions["epm.jobs"]
    with paced.app_context():
        jobs = [service.start("epm_generation", user_id=str(user.id), session_id=session_id)
                for session_id in sessions(paced, user, 12)]
        db.session.remove()
        pool = db.engine.pool

        def all_past_their_reads():
            states = service.store.load_many(job.id for job in jobs)
            return len(states) == len(jobs) and all(state.progress >= 10 and not state.is_terminal
                                                    for state in states.values())

        wait_for(all_past_their_reads, timeout=30, message="every job past reading its session")
        assert service.runner.running and len(service.runner.running) == 12
        assert pool.checkedout() == 0, f"{pool.checkedout()} connections held by 12 running jobs"


def test_jobs_more_than_the_pool_all_complete(paced, user):
    """More jobs at once than the pool has connections (5 + 5 overflow on PostgreSQL): none times out."""
    paced.config["EPM_STAGE_SECONDS"] = 0.05
    service = paced.extensions["epm.jobs"]
    with paced.app_context():
        jobs = [service.start("epm_generation", user_id=str(user.id), session_id=session_id)
                for session_id in sessions(paced, user, 24)]

        def all_ended():
            states = service.store.load_many(job.id for job in jobs)
            return [state for state in states.values() if state.is_terminal] if len(states) == 24 else None

        ended = wait_for(lambda: (done := all_ended()) and len(done) == 24 and done, timeout=90,
                         message="all 24 jobs to end")
        assert {state.status.value for state in ended} == {"completed"}, [state.error for state in ended]
