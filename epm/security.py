"""Hostile input and browser defences: what every request must pass and every response carries.

- Text with NUL or a lone UTF-16 surrogate (in the path, the query, a form or a JSON body) is refused
  with a 400 before any view sees it: neither PostgreSQL nor a UTF-8 encoder can store it.
- A JSON body nested deeper than ``MAX_JSON_DEPTH`` is refused with a 400 (it used to end in a
  RecursionError and a 500); a body over ``MAX_CONTENT_LENGTH`` with a 413 before it is read.
- An integer id in a URL beyond what the database's ``INTEGER`` holds is a 404, not a database error.
- Every response carries a strict Content-Security-Policy (no inline script or style), refuses to be
  framed, and sends no referrer to other sites.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import BadRequest

from .errors import EpmError, NotFound

MAX_JSON_DEPTH = 32
# The largest id PostgreSQL's INTEGER (and so every id column here) can hold.
MAX_ID = 2**31 - 1
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class BadInput(EpmError):
    """The request's bytes themselves are unusable (bad characters, nesting too deep, not JSON)."""

    status = 400
    code = "bad_input"


def init_app(app: Flask) -> None:
    app.url_value_preprocessor(refuse_ids_out_of_range)
    app.before_request(check_request_text)
    app.after_request(add_security_headers)


def refuse_ids_out_of_range(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """An id in the URL beyond what the database's INTEGER holds names nothing: 404, for every method.

    (A bounded URL converter would do it too, but Werkzeug then answers 405 for the other methods.)
    """
    for value in (values or {}).values():
        if isinstance(value, int) and not 0 <= value <= MAX_ID:
            raise NotFound("There is nothing at this address.")


def has_bad_text(value: str) -> bool:
    """True when ``value`` holds NUL or a lone surrogate."""
    return _BAD_TEXT.search(value) is not None


def check_request_text() -> None:
    """Refuse a request whose path, query, form or JSON body carries text that cannot be stored."""
    if has_bad_text(request.path):
        raise BadInput("The address contains characters that are not allowed (NUL or invalid Unicode).",
                       code="invalid_characters")
    for where, multi in (("query", request.args), ("form", request.form)):
        for key, value in multi.items(multi=True):
            if has_bad_text(key) or has_bad_text(value):
                raise BadInput(f"The {where} field {_shown(key)} contains characters that are not allowed "
                               "(NUL or invalid Unicode).", code="invalid_characters",
                               details={"fields": {_shown(key): "contains NUL or invalid Unicode"}})
    if request.is_json and request.content_length != 0:
        _check_json_body()


def _check_json_body() -> None:
    try:
        body = request.get_json()
    except RecursionError:
        raise BadInput(f"The JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels).",
                       code="too_deeply_nested") from None
    except BadRequest:
        raise BadInput("The body is not valid JSON.", code="invalid_json") from None
    problem = _json_problem(body)
    if problem:
        raise BadInput(problem, code="invalid_characters" if "characters" in problem else "too_deeply_nested")


def _json_problem(body: Any) -> str | None:
    """What is wrong with a parsed JSON value, walked without recursion, or None."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return f"The JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)."
        if isinstance(value, str):
            if has_bad_text(value):
                return "The JSON body contains characters that are not allowed (NUL or invalid Unicode)."
        elif isinstance(value, dict):
            pending.extend((key, depth) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
    return None


def _shown(key: str) -> str:
    return repr(_BAD_TEXT.sub("\ufffd", key)[:40])


def add_security_headers(response):
    """The same defences on every answer, pages, JSON, static files and errors alike."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response
