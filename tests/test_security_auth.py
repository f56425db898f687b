"""Sign-in that can be ended and cannot be hammered: session tokens, remember-me, limits, deleted accounts."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import delete

from epm import create_app
from epm.extensions import db
from epm.models import User
from epm.web import auth
from tests.conftest import _test_config, make_user
from tests.support import wait_for

PASSWORD = "password123"


def _sign_in(client, username: str, password: str = PASSWORD, remember: bool = False):
    data = {"username": username, "password": password}
    if remember:
        data["remember"] = "1"
    return client.post("/login", data=data)


def _session_cookie(client):
    return client.get_cookie("session")


def test_sign_out_ends_a_copied_session_cookie(app, user):
    client = app.test_client()
    assert _sign_in(client, user.username).status_code == 302
    copied = app.test_client()
    copied.set_cookie("session", _session_cookie(client).value)
    assert copied.get("/api/background-jobs").status_code == 200
    assert client.post("/logout").status_code == 302
    assert copied.get("/api/background-jobs").status_code == 401
    assert copied.get("/sessions").status_code == 302  # to the sign-in page
    assert copied.post("/api/sessions", json={"name": "x"}).status_code == 401


def test_sign_out_ends_the_sessions_on_every_device(app, user):
    laptop, phone = app.test_client(), app.test_client()
    _sign_in(laptop, user.username, remember=True)
    _sign_in(phone, user.username)
    laptop.post("/logout")
    assert phone.get("/api/background-jobs").status_code == 401


def test_remember_me_only_when_ticked_and_the_cookie_is_httponly_and_samesite(app, user):
    plain = app.test_client()
    _sign_in(plain, user.username)
    cookie = _session_cookie(plain)
    assert cookie.expires is None and cookie.http_only and cookie.same_site == "Lax"
    assert plain.get_cookie("remember_token") is None
    remembered = app.test_client()
    response = _sign_in(remembered, user.username, remember=True)
    assert _session_cookie(remembered).expires is not None
    assert "HttpOnly" in response.headers["Set-Cookie"] and "SameSite=Lax" in response.headers["Set-Cookie"]
    assert remembered.get_cookie("remember_token") is None


def test_an_old_style_remember_cookie_signs_nobody_in(app, user):
    client = app.test_client()
    from flask_login.utils import encode_cookie

    with app.test_request_context():
        client.set_cookie("remember_token", encode_cookie(str(user.id)))
    assert client.get("/api/background-jobs").status_code == 401
    assert client.get("/sessions").status_code == 302


def test_password_change_ends_every_session(app, user):
    client = app.test_client()
    _sign_in(client, user.username, remember=True)
    result = app.test_cli_runner().invoke(args=["users", "set-password", user.username, "--password",
                                                "a-new-password"])
    assert result.exit_code == 0, result.output
    assert client.get("/api/background-jobs").status_code == 401
    assert _sign_in(app.test_client(), user.username).status_code == 401
    assert _sign_in(app.test_client(), user.username, "a-new-password").status_code == 302


def test_deleted_account_gets_401_everywhere(app, user):
    client = app.test_client()
    _sign_in(client, user.username)
    result = app.test_cli_runner().invoke(args=["users", "delete", user.username, "--yes"])
    assert result.exit_code == 0, result.output
    assert client.get("/api/background-jobs").status_code == 401
    assert client.post("/api/background-jobs", json={"job_type": "demo_countdown"}).status_code == 401
    assert client.get("/api/sessions").status_code == 401


def test_account_deleted_behind_the_apps_back_cannot_start_jobs(app, user):
    client = app.test_client()
    _sign_in(client, user.username)
    with app.app_context():
        db.session.execute(delete(User).where(User.id == user.id))
        db.session.commit()
    response = client.post("/api/background-jobs", json={"job_type": "demo_countdown"})
    assert response.status_code == 401
    assert client.get("/api/background-jobs").status_code == 401  # the failed load ended its sessions


def test_unknown_username_costs_the_same_hash_as_a_wrong_password(app, user, monkeypatch):
    checked: list[str] = []
    real = auth.check_password_hash
    monkeypatch.setattr(auth, "check_password_hash", lambda stored, pw: checked.append(stored) or real(stored, pw))
    with app.app_context():
        assert auth.authenticate("nobody-here", "password123") is None
        assert auth.authenticate(user.username, "wrong-password") is None
        assert auth.authenticate(user.username, PASSWORD) is not None
    assert len(checked) == 3
    assert checked[0].split("$", 1)[0] == checked[1].split("$", 1)[0]  # the same method and cost


@pytest.fixture
def limited_app(request, tmp_path, sqlite_template):
    """The app on the embedded default with small limits switched on."""
    path = tmp_path / "epm.sqlite"
    shutil.copy(sqlite_template, path)
    app = create_app(_test_config(REDIS_URL=None, SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}",
                                  RATELIMIT_ENABLED=True, EPM_LIMIT_SIGNIN="3 per minute",
                                  EPM_LIMIT_SIGNUP="2 per minute", EPM_LIMIT_START="2 per minute"))
    yield app
    app.extensions["epm.jobs"].runner.shutdown(grace=5)


def test_wrong_passwords_are_limited_and_then_even_the_right_one_waits(limited_app):
    make_user(limited_app, "victim")
    client = limited_app.test_client()
    statuses = [_sign_in(client, "victim", "wrong-guess").status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    response = _sign_in(client, "victim")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Try again in" in response.get_data(as_text=True) and "text/html" in response.content_type


def test_wrong_passwords_for_one_account_are_limited_across_addresses(limited_app):
    make_user(limited_app, "victim")
    statuses = [limited_app.test_client().post("/login", data={"username": "victim", "password": "nope-nope"},
                                               environ_base={"REMOTE_ADDR": f"10.0.0.{n}"}).status_code
                for n in range(5)]
    assert statuses[-1] == 429


def test_sign_ups_are_limited_per_address(limited_app):
    client = limited_app.test_client()
    statuses = [client.post("/signup", data={"username": f"new{n}", "password": PASSWORD}).status_code
                for n in range(3)]
    assert statuses == [302, 302, 429]


def test_job_starts_are_limited_per_account_with_a_json_429(limited_app):
    user = make_user(limited_app, "starter")
    from tests.conftest import sign_in

    client = limited_app.test_client()
    sign_in(limited_app, client, user.id)
    statuses = []
    for _ in range(3):
        response = client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": {"steps": 1}})
        statuses.append(response.status_code)
        if response.status_code == 202:  # one demo at a time (its duplicate lock): let it end first
            job_id = response.get_json()["job"]["id"]
            wait_for(lambda job_id=job_id: client.get(f"/api/background-jobs/{job_id}").get_json()["job"]["terminal"],
                     message="the demo job to end")
    assert statuses == [202, 202, 429]
    body = client.post("/api/background-jobs", json={"job_type": "demo_countdown"}).get_json()
    assert body["error"]["code"] == "rate_limited" and body["error"]["retry_after"] > 0


def test_demo_operation_exists_only_when_enabled(tmp_path, sqlite_template):
    path = tmp_path / "epm.sqlite"
    shutil.copy(sqlite_template, path)
    app = create_app(_test_config(REDIS_URL=None, SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", EPM_DEMO=False))
    try:
        user = make_user(app, "demo")
        from tests.conftest import sign_in

        client = app.test_client()
        sign_in(app, client, user.id)
        response = client.post("/api/background-jobs", json={"job_type": "demo_countdown"})
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "unknown_operation"
        assert "demo_countdown" not in {op["name"] for op in client.get("/api/operations").get_json()["operations"]}
    finally:
        app.extensions["epm.jobs"].runner.shutdown(grace=5)
        from epm.operations import demo

        demo.init_app(create_app(_test_config(REDIS_URL=None, SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}")))


@pytest.mark.parametrize("params", [{"steps": 10_000}, {"cpu_ms": 10_000}, {"steps": 1000, "cpu_ms": 1000},
                                    {"steps": 1000, "step_seconds": 30}, {"surprise": 1}])
def test_demo_parameters_are_bounded(auth_client, params):
    response = auth_client.post("/api/background-jobs", json={"job_type": "demo_countdown", "params": params})
    assert response.status_code == 422, response.get_json()


def test_the_session_check_costs_no_database_query_on_the_job_lists_304(app, auth_client):
    from sqlalchemy import event

    first = auth_client.get("/api/background-jobs")
    assert first.status_code == 200
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        again = auth_client.get("/api/background-jobs", headers={"If-None-Match": first.headers["ETag"]})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert again.status_code == 304
    assert statements == []
