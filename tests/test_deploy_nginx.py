"""The documented deployment: HTTPS cookies and HSTS (epm/web/proxy.py), then docs/deploy.md's nginx block run
for real with TLS and HTTP/2 in front of two instances, driven by Chromium (see tests/deploy_support.py).
"""

from __future__ import annotations

import pytest

from epm import create_app
from epm.config import load
from epm.web.proxy import secure_cookie
from tests.conftest import make_user

SIGNUP = {"username": "carol", "password": "password123"}


def _set_cookies(response) -> dict[str, str]:
    return {value.split("=", 1)[0]: value for value in response.headers.getlist("Set-Cookie")}


def _signed_up(app, base_url: str):
    response = app.test_client().post("/signup", data={**SIGNUP}, base_url=base_url)
    assert response.status_code == 302, response.text[:300]
    return response


# -- cookies and HSTS --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["embedded"])
def test_over_https_from_the_proxy_every_cookie_is_secure(app):
    cookies = _set_cookies(_signed_up(app, "https://epm.test:8443"))
    assert {"session", "remember_token"} <= cookies.keys()
    for name, header in cookies.items():
        assert "; secure" in header.lower(), f"{name} is not Secure over HTTPS: {header}"


@pytest.mark.parametrize("backend", ["embedded"])
def test_over_plain_http_cookies_stay_usable_and_no_hsts_is_sent(app):
    response = _signed_up(app, "http://127.0.0.1:8000")
    cookies = _set_cookies(response)
    assert {"session", "remember_token"} <= cookies.keys()
    assert not any("secure" in header.lower() for header in cookies.values()), cookies
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize("backend", ["embedded"])
def test_https_only_site_marks_cookies_secure_even_on_http_and_sends_hsts(app):
    app.config.update(EPM_HTTPS=True, EPM_HSTS_SECONDS=600)
    from epm.web import proxy

    proxy.init_app(app)  # wrapped again with the new settings: the outer wrapper decides
    user = make_user(app, "dave")
    client = app.test_client()
    response = client.post("/login", data={"username": user.username, "password": "password123"},
                           base_url="http://127.0.0.1:8000")
    assert response.status_code == 302
    cookies = _set_cookies(response)
    assert {"session", "remember_token"} <= cookies.keys()
    assert all("; secure" in header.lower() for header in cookies.values()), cookies
    assert response.headers.getlist("Strict-Transport-Security") == ["max-age=600"]
    assert client.get("/healthz").headers["Strict-Transport-Security"] == "max-age=600"


@pytest.mark.parametrize("backend", ["embedded"])
def test_hsts_is_only_sent_when_the_operator_declares_the_site_https_only(app):
    response = app.test_client().get("/login", base_url="https://epm.test")
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers


def test_hsts_seconds_zero_sends_none_and_a_negative_value_is_refused():
    settings = load({"EPM_HTTPS": "1", "EPM_HSTS_SECONDS": "0", "SECRET_KEY": "x"})
    assert settings["EPM_HTTPS"] is True
    app = create_app({**settings, "TESTING": True, "EPM_MAINTENANCE": False})
    assert "Strict-Transport-Security" not in app.test_client().get("/healthz").headers
    with pytest.raises(ValueError, match="EPM_HSTS_SECONDS must be 0"):
        create_app({"TESTING": True, "EPM_MAINTENANCE": False, "EPM_HSTS_SECONDS": -1})


def test_defaults_are_no_https_only_and_a_year_of_hsts():
    settings = load({})
    assert settings["EPM_HTTPS"] is False
    assert settings["EPM_HSTS_SECONDS"] == 365 * 24 * 3600


def test_secure_is_added_once_whatever_its_case():
    assert secure_cookie("session=abc; HttpOnly; Path=/") == "session=abc; HttpOnly; Path=/; Secure"
    assert secure_cookie("a=b; Path=/; secure") == "a=b; Path=/; secure"
    assert secure_cookie("secure=1; Path=/") == "secure=1; Path=/; Secure"  # a cookie named "secure" is not the flag
