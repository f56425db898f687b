"""Health checks for load balancers and orchestrators: unauthenticated and cheap."""

from __future__ import annotations

from flask import Blueprint, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving; no I/O."""
    return jsonify(status="ok")
