"""Each operation run through the job system: started as a job, saved to the database, linked from its result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from epm.extensions import db
from epm.jobs.job import Job, JobStatus
from epm.models import Analysis, Program, StrategySession
from tests.conftest import make_user
from tests.support import pages_handler, serve_http, wait_for

PAGE = (Path(__file__).parent / "data" / "operations" / "bike_shop.html").read_bytes()


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with serve_http(pages_handler({"/shop": PAGE})) as url:
        yield url


def add_session(app, user, **fields) -> int:
    values = {"name": "Utrecht e-bikes", "business": "A bike repair workshop for commuters in Utrecht, adding "
              "e-bike rentals.", "objectives": ["Open 2 new workshops", "Launch an online booking app"],
              "budget": Decimal("120000.00"), "deadline": date(2026, 6, 30), "team_size": 4, "source_urls": []}
    values.update(fields)
    with app.app_context():
        session = StrategySession(user_id=user.id, **values)
        db.session.add(session)
        db.session.commit()
        return session.id


def run_job(app, job_type: str, user, session_id: int, params: dict | None = None) -> Job:
    service = app.extensions["epm.jobs"]
    with app.app_context():
        job = service.start(job_type, user_id=str(user.id), session_id=str(session_id), params=params or {})

        def finished() -> Job | None:
            current = service.get(job.id, str(user.id))
            return current if current.is_terminal else None

        return wait_for(finished, message=f"the {job_type} job to finish")


def test_research_job_saves_a_report_of_every_source(app, site):
    app.config["EPM_RESEARCH_ALLOW_PRIVATE"] = True
    user = make_user(app)
    session_id = add_session(app, user, source_urls=[f"{site}/shop", f"{site}/gone", f"{site}/shop"])
    job = run_job(app, "web_research", user, session_id)
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result["url"] == f"/sessions/{session_id}/research"
    assert job.result["ready"] == "Research report ready" and job.result["view_label"] == "View research report"
    with app.app_context():
        analysis = db.session.get(Analysis, job.result["analysis_id"])
        assert (analysis.kind, analysis.session_id, analysis.user_id, analysis.job_id) == \
            ("research", session_id, user.id, job.id)
        assert (analysis.data["read"], analysis.data["failed"]) == (1, 1)  # the repeated URL is read once
        assert analysis.data["sources"][0]["title"] == "Utrecht E-Bike Repair & Rental"
        assert analysis.data["sources"][1]["error"] == "The server answered 404 Not Found."


def test_canvas_job_uses_the_latest_research(app):
    user = make_user(app)
    session_id = add_session(app, user)
    with app.app_context():
        research = Analysis(user_id=user.id, session_id=session_id, kind="research",
                            data={"read": 1, "failed": 0, "key_terms": [{"term": "students", "count": 9, "pages": 1}]})
        db.session.add(research)
        db.session.commit()
        research_id = research.id
    job = run_job(app, "bmc_analysis", user, session_id)
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result["url"] == f"/sessions/{session_id}/canvas"
    with app.app_context():
        canvas = db.session.get(Analysis, job.result["analysis_id"])
        assert canvas.kind == "bmc" and canvas.data["research_analysis_id"] == research_id
        segments = [item["text"] for item in canvas.data["blocks"][6]["items"]]
        assert segments == ["Commuters in Utrecht are customers of the bike repair workshop.",
                            "The research names students as buyers in this market."]


def test_program_job_saves_the_program(app):
    user = make_user(app)
    session_id = add_session(app, user)
    job = run_job(app, "epm_generation", user, session_id, {"start_date": "2026-01-05"})
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result["url"] == f"/programs/{job.result['program_id']}"
    with app.app_context():
        program = db.session.get(Program, job.result["program_id"])
        assert program.name == "Utrecht e-bikes \u2014 EPM program" and program.job_id == job.id
        assert program.data["start"] == "2026-01-05" and program.data["summary"] == job.result["summary"]
        assert program.data["sources"] == {"canvas_analysis_id": None, "research_analysis_id": None}


def test_operation_on_another_users_session_fails_without_touching_it(app):
    owner, other = make_user(app), make_user(app)
    session_id = add_session(app, owner)
    job = run_job(app, "epm_generation", other, session_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, "session_not_found")
    with app.app_context():
        assert Program.query.count() == 0
