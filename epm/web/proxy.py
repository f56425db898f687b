"""HTTPS behind a reverse proxy: ``Secure`` on every cookie of an HTTPS response, and HSTS for HTTPS-only sites.

Whether a request came over HTTPS is the server's ``wsgi.url_scheme``. Behind a proxy that ends TLS, gunicorn
sets it from ``X-Forwarded-Proto``, but only for a peer it trusts (``FORWARDED_ALLOW_IPS``, default
``127.0.0.1,::1``): epm adds no second list of trusted proxies. ``EPM_HTTPS=1`` declares the site HTTPS-only:
every cookie is then ``Secure`` whatever the request says, and ``Strict-Transport-Security`` is sent for
``EPM_HSTS_SECONDS``.

This works on the WSGI response rather than through Flask's and Flask-Login's cookie settings because
those are one value per app, while one instance answers both the proxy (HTTPS) and direct probes (HTTP);
and the session cookie is written after every ``after_request`` hook, so only the response's headers see
all cookies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def secure_cookie(header: str) -> str:
    """The ``Set-Cookie`` value ``header`` with the ``Secure`` attribute (unchanged if it has it)."""
    attributes = (part.strip().lower() for part in header.split(";")[1:])
    return header if "secure" in attributes else header + "; Secure"


class HttpsResponses:
    """WSGI middleware: for a request over HTTPS (or any request when ``https_only``), mark every cookie
    ``Secure`` and, when ``https_only`` and ``hsts_seconds`` > 0, add ``Strict-Transport-Security``."""

    def __init__(self, wsgi_app: WsgiApp, https_only: bool, hsts_seconds: int):
        self.wsgi_app = wsgi_app
        self.https_only = https_only
        self.hsts = f"max-age={hsts_seconds}" if https_only and hsts_seconds > 0 else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not (self.https_only or environ.get("wsgi.url_scheme") == "https"):
            return self.wsgi_app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(name, secure_cookie(value) if name.lower() == "set-cookie" else value)
                       for name, value in headers]
            if self.hsts and not any(name.lower() == "strict-transport-security" for name, _ in headers):
                headers.append(("Strict-Transport-Security", self.hsts))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def init_app(app: Flask) -> None:
    """Wrap the app's WSGI callable; refuse a negative ``EPM_HSTS_SECONDS`` at start rather than send it."""
    seconds = app.config["EPM_HSTS_SECONDS"]
    if seconds < 0:
        raise ValueError(f"EPM_HSTS_SECONDS must be 0 (no HSTS) or more, got {seconds}")
    app.wsgi_app = HttpsResponses(app.wsgi_app, app.config["EPM_HTTPS"], seconds)
