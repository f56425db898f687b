"""The start page."""

from __future__ import annotations

from flask import Blueprint, redirect, url_for
from flask_login import current_user

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    if "sessions.index" in _endpoints():
        return redirect(url_for("sessions.index"))
    return redirect(url_for("auth.login"))


def _endpoints() -> set[str]:
    from flask import current_app

    return set(current_app.view_functions)
