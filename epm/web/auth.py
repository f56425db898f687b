"""Accounts: sign up, sign in, sign out, and ``flask users create`` for operators."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import click
from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..errors import NotFound, ValidationFailed
from ..extensions import db, login_manager
from ..models import User

bp = Blueprint("auth", __name__)
users_cli = click.Group("users", help="Manage user accounts.")

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,40}$")
MIN_PASSWORD = 8

login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


@login_manager.unauthorized_handler
def unauthorized():
    from ..errors import Unauthorized

    if request.path.startswith("/api/"):
        raise Unauthorized("Sign in first.")
    return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))


def current_user_id() -> str | None:
    """The signed-in user's id as the job system keys it, or None. The one place that says who is asking.

    Read from the signed session cookie when it names the user, without loading the account, so that
    the job API's cheap answers (a 304 of the list, opening an event stream) cost no database query;
    the account is loaded only to restore a session from the remember-me cookie.
    """
    user_id = session.get("_user_id")
    if user_id is not None:
        return str(user_id)
    return str(current_user.id) if current_user.is_authenticated else None


def signed_in_user_id() -> str:
    """``current_user_id`` on a page behind ``login_required``; a 404, never another user's data, if misused."""
    user_id = current_user_id()
    if user_id is None:
        raise NotFound("There is nothing at this address.")
    return user_id


def create_user(username: str, password: str) -> User:
    """Create an account, raising ValidationFailed with a message per field."""
    username = (username or "").strip()
    errors = {}
    if not USERNAME.match(username):
        errors["username"] = "Use 3 to 40 letters, digits, dots, dashes or underscores."
    if len(password or "") < MIN_PASSWORD:
        errors["password"] = f"Use at least {MIN_PASSWORD} characters."
    if not errors and db.session.scalar(select(User).where(func.lower(User.username) == username.lower())):
        errors["username"] = "That username is taken."
    if errors:
        raise ValidationFailed("Please correct the marked fields.", errors)
    user = User(username=username)
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed("Please correct the marked fields.", {"username": "That username is taken."}) from None
    return user


def _safe_next(target: str | None) -> str:
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("home.index")


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    errors: dict[str, str] = {}
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "")
        try:
            user = create_user(username, request.form.get("password", ""))
        except ValidationFailed as exc:
            errors = exc.fields
        else:
            login_user(user, remember=True)
            flash(f"Welcome, {user.username}.", "success")
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/signup.html", errors=errors, username=username), 422 if errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        user = db.session.scalar(select(User).where(func.lower(User.username) == username.lower()))
        if user is None or not user.check_password(request.form.get("password", "")):
            error = "That username and password do not match an account."
        else:
            login_user(user, remember=True)
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", error=error, username=username), 401 if error else 200


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@users_cli.command("create")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_user_command(username: str, password: str) -> None:
    """Create an account."""
    try:
        user = create_user(username, password)
    except ValidationFailed as exc:
        raise click.ClickException("; ".join(f"{k}: {v}" for k, v in exc.fields.items())) from None
    click.echo(f"created user {user.username} (id {user.id})")
