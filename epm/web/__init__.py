"""The pages of the app, one blueprint per area."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import analyses, auth, health, home, jobs_pages, programs, sessions

    app.register_blueprint(auth.bp)
    app.register_blueprint(home.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(sessions.bp)
    app.register_blueprint(programs.bp)
    app.register_blueprint(analyses.bp)
    app.register_blueprint(jobs_pages.bp)
    app.cli.add_command(auth.users_cli)
    # Templates link only to pages that exist in this build of the app.
    app.jinja_env.globals["has_endpoint"] = lambda name: name in app.view_functions
