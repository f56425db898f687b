"""Accounts: sign up, sign in, sign out, and ``flask users ...`` for operators.

A sign-in can be ended. Each account has a session generation in Redis (``{prefix}user:{id}:auth``, a
counter, 0 when absent); the signed session cookie carries a token derived from it (an HMAC with the
secret key), and every request compares the two (one Redis GET, no database query: the job API's hot
paths stay cheap). Signing out, changing the password or deleting the account bumps the generation,
which ends every session of the account on every device at once. The token is derived rather than
stored so that every process agrees on it without sharing state, and a Redis that lost its data does
not sign everybody out (it does let sessions ended before the account's first sign-out back in: run
Redis with persistence, as deploy.md says). "Remember me" is the same cookie made to outlive the
browser (``session.permanent``), so it is revoked the same way; without the box ticked the cookie ends
with the browser.

Passwords are hashed in gevent's threadpool (scrypt would stall every request of the worker), and an
unknown username costs the same hash as a wrong password, so timing does not tell which names exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from datetime import timedelta
from functools import cache
from urllib.parse import urlsplit

import click
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask.cli import AppGroup
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..concurrency import run_blocking
from ..errors import NotFound, ValidationFailed
from ..extensions import db, get_redis, login_manager
from ..models import User

bp = Blueprint("auth", __name__)
users_cli = AppGroup("users", help="Manage user accounts.")

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,40}$")
MIN_PASSWORD = 8

login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."


AUTH_KEY = "_auth"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The signed-in account, or None when its session was ended or the account is gone."""
    if not user_id.isdigit() or not _session_is_current(user_id):
        return None
    user = db.session.get(User, int(user_id))
    if user is None:
        end_sessions(user_id)  # deleted behind the app's back: its cookies stop at the cheap check too
    return user


def _store():
    return current_app.extensions["epm.jobs"].store


def session_token_for(secret_key: str, user_id: int | str, generation: int) -> str:
    """The token a session of ``user_id`` carries while the account's session generation is ``generation``."""
    message = f"epm-session:{user_id}:{generation}".encode()
    return hmac.new(str(secret_key).encode(), message, hashlib.sha256).hexdigest()[:32]


def session_token(user_id: int | str) -> str:
    """The account's current session token: one Redis GET of its session generation."""
    generation = int(get_redis().get(_store().user_auth_key(str(user_id))) or 0)
    return session_token_for(current_app.config["SECRET_KEY"], user_id, generation)


def end_sessions(user_id: int | str) -> None:
    """End every session and remembered sign-in of the account, on every device."""
    get_redis().incr(_store().user_auth_key(str(user_id)))


def _session_is_current(user_id: str) -> bool:
    """Whether this request's cookie carries the account's current token (one Redis GET per request)."""
    cached = g.get("_epm_session_current")
    if cached is not None:
        return cached
    token = session.get(AUTH_KEY)
    current = bool(token) and hmac.compare_digest(session_token(user_id), str(token))
    g._epm_session_current = current
    return current


def sign_in(user: User, remember: bool = False) -> None:
    """Start a session for ``user``; with ``remember`` it outlives the browser (REMEMBER_COOKIE_DAYS)."""
    session.clear()  # a fresh session: nothing from before the sign-in carries over
    login_user(user, remember=False)
    session[AUTH_KEY] = session_token(user.id)
    session.permanent = remember
    g._epm_session_current = True


@event.listens_for(User, "after_delete")
def _account_deleted(_mapper, _connection, user: User) -> None:
    end_sessions(user.id)


@login_manager.unauthorized_handler
def unauthorized():
    from ..errors import Unauthorized

    if request.path.startswith("/api/"):
        raise Unauthorized("Sign in first.")
    return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))


def current_user_id() -> str | None:
    """The signed-in user's id as the job system keys it, or None. The one place that says who is asking.

    Taken from the signed session cookie and checked against the account's session token in Redis,
    without loading the account, so that the job API's cheap answers (a 304 of the list, opening an
    event stream) cost no database query, and a cancel works while the database is away.
    """
    user_id = session.get("_user_id")
    if user_id is not None:
        return str(user_id) if _session_is_current(str(user_id)) else None
    return str(current_user.id) if current_user.is_authenticated else None


def existing_user_id() -> str | None:
    """``current_user_id``, with the account loaded: None for one deleted behind the app's back.

    For starting jobs (which write a row anyway); reads and cancels keep working from Redis alone.
    """
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
    user = User(username=username, password_hash=hash_work(generate_password_hash, password))
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
            sign_in(user, remember=bool(request.form.get("remember")))
            flash(f"Welcome, {user.username}.", "success")
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/signup.html", errors=errors, username=username), 422 if errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        user = authenticate(username, request.form.get("password", ""))
        if user is None:
            error = "That username and password do not match an account."
        else:
            sign_in(user, remember=bool(request.form.get("remember")))
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", error=error, username=username), 401 if error else 200


# One password hash at a time per process: a burst of sign-ins queues here instead of oversubscribing the
# cores with scrypt threads, which would starve the event loop's own thread (every other request's).
_HASHING = threading.BoundedSemaphore(1)


def hash_work(fn, *args):
    """Run password hashing ``fn(*args)`` off the event loop, one at a time, holding no database connection.

    The request's database session ends first (its reads are done; what it loaded stays readable), so a
    queue of sign-ins waiting for the hasher never holds the pool's connections.
    """
    db.session.close()
    with _HASHING:
        return run_blocking(fn, *args)


@cache
def unknown_user_hash() -> str:
    """A hash made like a real one, checked when the username is unknown: the same work either way.

    Making it is one scrypt (about 110 ms of CPU), so it is made once per process at a worker's boot
    (epm/warmup.py), or else off the event loop at the first unknown name, never on the loop mid-request.
    """
    return run_blocking(generate_password_hash, secrets.token_hex(16))


def authenticate(username: str, password: str) -> User | None:
    """The account ``username``/``password`` opens, or None; equally slow whether the name exists or not."""
    user = None
    if len(username) <= 80:
        user = db.session.scalar(select(User).where(func.lower(User.username) == username.lower()))
    stored = user.password_hash if user is not None else unknown_user_hash()
    matches = hash_work(check_password_hash, stored, password)
    return user if matches and user is not None else None


def change_password(user: User, password: str) -> None:
    """Set a new password and end every session of the account (the caller signs in again)."""
    if len(password or "") < MIN_PASSWORD:
        raise ValidationFailed("Please correct the marked fields.",
                               {"password": f"Use at least {MIN_PASSWORD} characters."})
    password_hash = hash_work(generate_password_hash, password)
    user = db.session.merge(user)
    user.password_hash = password_hash
    db.session.commit()
    end_sessions(user.id)


@bp.post("/logout")
@login_required
def logout():
    end_sessions(current_user.id)
    logout_user()
    session.clear()
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


def _find_user(username: str) -> User:
    user = db.session.scalar(select(User).where(func.lower(User.username) == username.lower()))
    if user is None:
        raise click.ClickException(f"There is no user {username!r}.")
    return user


@users_cli.command("set-password")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def set_password_command(username: str, password: str) -> None:
    """Change an account's password; every session of the account ends."""
    try:
        change_password(_find_user(username), password)
    except ValidationFailed as exc:
        raise click.ClickException("; ".join(exc.fields.values())) from None
    click.echo(f"password changed; every session of {username} has ended")


@users_cli.command("sign-out")
@click.argument("username")
def sign_out_command(username: str) -> None:
    """End every session and remembered sign-in of an account (a lost laptop, a leaked cookie)."""
    end_sessions(_find_user(username).id)
    click.echo(f"every session of {username} has ended")


@users_cli.command("delete")
@click.argument("username")
@click.confirmation_option(prompt="Delete the account with its sessions, programs and analyses?")
def delete_user_command(username: str) -> None:
    """Delete an account; its cookies answer 401 from the next request on."""
    user = _find_user(username)
    db.session.delete(user)
    db.session.commit()
    click.echo(f"deleted user {username}")


def init_app(app) -> None:
    """How long a remembered sign-in lasts; who may start jobs (an account that still exists)."""
    app.extensions["epm.existing_user_id"] = existing_user_id
    app.permanent_session_lifetime = timedelta(days=int(app.config["REMEMBER_COOKIE_DAYS"]))
