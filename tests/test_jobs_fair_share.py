"""Fair share: one account runs at most EPM_MAX_RUNNING_PER_USER jobs at once; others are unaffected."""

from __future__ import annotations

import threading

import pytest

from epm.errors import TooManyRunning
from tests.conftest import make_user
from tests.support import wait_for

LONG = {"steps": 1000, "step_seconds": 0.05}


def start(app, user_id, session_id, **params):
    """Start a long demo job for ``user_id`` in a session of its own (so the duplicate lock stays out)."""
    with app.app_context():
        return app.extensions["epm.jobs"].start("demo_countdown", user_id=str(user_id), session_id=session_id,
                                                params=params or LONG)


def cancel_and_wait(app, user_id, job_id):
    service = app.extensions["epm.jobs"]
    with app.app_context():
        service.cancel(job_id, str(user_id))

    def ended():
        with app.app_context():
            return service.get(job_id, str(user_id)).is_terminal

    wait_for(ended, timeout=20, message=f"job {job_id} to end")


@pytest.fixture
def capped(app):
    app.config["EPM_MAX_RUNNING_PER_USER"] = 2
    yield app
    app.extensions["epm.jobs"].runner.shutdown(grace=1)  # the long jobs stop at their next step


def test_start_past_the_cap_is_refused_with_the_running_jobs(capped, user):
    first = start(capped, user.id, "s1")
    second = start(capped, user.id, "s2")
    with pytest.raises(TooManyRunning) as refused:
        start(capped, user.id, "s3")
    assert refused.value.status == 429 and refused.value.limit == 2
    assert [job["id"] for job in refused.value.running] == [first.id, second.id]


def test_a_finished_job_frees_its_place(capped, user):
    first = start(capped, user.id, "s1")
    start(capped, user.id, "s2")
    cancel_and_wait(capped, user.id, first.id)
    assert start(capped, user.id, "s3").status.value == "pending"


def test_other_accounts_are_not_held_to_one_accounts_jobs(capped, user):
    start(capped, user.id, "s1")
    start(capped, user.id, "s2")
    other = make_user(capped, "bob")
    assert start(capped, other.id, "s1").user_id == str(other.id)


def test_parallel_starts_of_one_account_never_pass_the_cap(capped, user):
    admitted, refused = [], []

    def attempt(number):
        try:
            admitted.append(start(capped, user.id, f"p{number}"))
        except TooManyRunning:
            refused.append(number)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 2 and len(refused) == 6


def test_the_api_answers_429_with_a_readable_message_and_the_running_jobs(capped, user, auth_client):
    running = [start(capped, user.id, "s1"), start(capped, user.id, "s2")]
    response = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {"steps": 1}})
    assert response.status_code == 429
    error = response.json["error"]
    assert error["code"] == "too_many_running" and error["limit"] == 2
    assert "2 jobs running" in error["message"]
    assert {job["id"] for job in error["running"]} == {job.id for job in running}
    # The refused start left nothing behind: no third row, no lock on the demo's kind.
    assert len(auth_client.get("/api/background-jobs").json["jobs"]) == 2
    cancel_and_wait(capped, user.id, running[0].id)
    again = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {"steps": 1}})
    assert again.status_code == 202


def _session_page(app, user, client):
    from epm.extensions import db
    from epm.models import StrategySession

    with app.app_context():
        session = StrategySession(user_id=user.id, name="Cap", business="A bakery.", objectives=["Open a shop"],
                                  source_urls=["https://example.com/"])
        db.session.add(session)
        db.session.commit()
        session_id = session.id
    return lambda: client.get(f"/sessions/{session_id}").get_data(as_text=True)


def test_the_session_page_says_before_a_click_that_the_account_is_at_its_cap(capped, user, auth_client):
    page = _session_page(capped, user, auth_client)
    assert 'id="cap-reason" data-cap-reason data-max-running="2" hidden' in page()
    assert "disabled" not in page().split('data-operation="epm_generation"', 1)[1].split("</form>", 1)[0]
    running = [start(capped, user.id, "s1"), start(capped, user.id, "s2")]
    html = page()
    note = html.split('id="cap-reason"', 1)[1].split("</p>", 1)[0]
    assert " hidden" not in note.split(">", 1)[0] and "already runs 2 jobs" in note
    for operation in ("web_research", "bmc_analysis", "epm_generation"):
        form = html.split(f'data-operation="{operation}"', 1)[1].split("</form>", 1)[0]
        assert "disabled" in form and 'aria-describedby="cap-reason"' in form
    cancel_and_wait(capped, user.id, running[0].id)
    assert 'data-max-running="2" hidden' in page()
