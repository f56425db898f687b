"""Request-rate limits (Flask-Limiter): sign-in, sign-up and job starts, per account and per address.

The counters live in Redis (``REDIS_URL``), shared by every worker and instance, under the app's key
prefix; on the embedded default they live in the process's memory. A request over a limit answers
429 with ``Retry-After`` and a sentence saying when to try again: JSON under ``/api/``, a page
elsewhere. Should Redis fail, requests are let through (``RATELIMIT_SWALLOW_ERRORS``): a limit is
not worth an outage. The limits themselves are settings (``EPM_LIMIT_SIGNIN`` ...), read in config.py.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, request
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address

from .errors import EpmError, answer
from .extensions import limiter

# Endpoints that start a job, from the JSON API and from the pages.
START_ENDPOINTS = ("jobs_api.start_job", "jobs_api.retry_job", "sessions.api_start", "sessions.start_operation",
                   "jobs_pages.retry")


def by_address() -> str:
    return "address:" + (get_remote_address() or "unknown")


def by_account() -> str:
    """The signed-in account (its address when nobody is signed in: the view answers 401 anyway)."""
    user_id = current_app.extensions["epm.user_id"]()
    return f"account:{user_id}" if user_id is not None else by_address()


def by_username() -> str:
    """The account a sign-in names, so guessing one account's password from many addresses is limited too."""
    return "username:" + (request.form.get("username") or "").strip().lower()[:80]


def _failed_sign_in(response) -> bool:
    return response.status_code == 401


def init_app(app: Flask) -> None:
    """Configure the limiter's storage from the app's settings and put the limits on their routes."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"] or "memory://")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", app.config["EPM_KEY_PREFIX"] + "limit")
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)

    signin, signup, start = (app.config["EPM_LIMIT_SIGNIN"], app.config["EPM_LIMIT_SIGNUP"],
                             app.config["EPM_LIMIT_START"])
    _limit(app, "auth.login",
           limiter.limit(signin, key_func=by_address, methods=["POST"], scope="signin",
                         error_message="Too many sign-in attempts from this address"),
           # Per account name only wrong passwords count: its owner signing in and out is not locked out.
           limiter.limit(signin, key_func=by_username, methods=["POST"], scope="signin-account",
                         deduct_when=_failed_sign_in, error_message="Too many wrong passwords for this account"))
    _limit(app, "auth.signup", limiter.limit(signup, key_func=by_address, methods=["POST"], scope="signup",
                                             error_message="Too many accounts created from this address"))
    for endpoint in START_ENDPOINTS:
        _limit(app, endpoint,
               limiter.limit(start, key_func=by_account, methods=["POST"], scope="start",
                             error_message="Too many jobs started by this account"),
               limiter.limit(start, key_func=by_address, methods=["POST"], scope="start-address",
                             error_message="Too many jobs started from this address"))

    @app.errorhandler(RateLimitExceeded)
    def on_rate_limited(error: RateLimitExceeded):
        wait = _seconds_until_reset()
        response = answer(EpmError(f"{error.description} (at most {error.limit.limit}). Try again in "
                                   f"{_duration(wait)}.", code="rate_limited", status=429,
                                   details={"retry_after": wait}))
        response.headers["Retry-After"] = str(wait)
        return response


def _limit(app: Flask, endpoint: str, *decorators) -> None:
    """Wrap the registered view of ``endpoint`` (blueprints are registered by now) in the limits."""
    if endpoint not in app.view_functions:
        return
    view = app.view_functions[endpoint]
    for decorate in decorators:
        view = decorate(view)
    app.view_functions[endpoint] = view


def _seconds_until_reset() -> int:
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, math.ceil(current.reset_at - time.time()))


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"
