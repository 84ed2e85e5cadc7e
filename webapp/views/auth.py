"""Log in and out, and change one's password; ending a session ends it everywhere."""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, select, update
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, EqualTo, Length

from webapp import signed_in
from webapp.extensions import db
from webapp.forms import Form
from webapp.models import User
from webapp.throttle import note_failed_login

bp = Blueprint("auth", __name__)


class LoginForm(Form):
    """E-mail and password."""

    email = EmailField("E-mail", validators=[DataRequired(message="Enter your e-mail address.")])
    password = PasswordField("Password", validators=[DataRequired(message="Enter your password.")])


class PasswordForm(Form):
    """The current password and a new one, twice."""

    current = PasswordField("Current password", validators=[DataRequired(message="Enter your current password.")])
    new = PasswordField("New password", validators=[
        DataRequired(message="Enter a new password."),
        Length(min=8, max=200, message="Use at least 8 characters.")])
    confirm = PasswordField("New password again", validators=[EqualTo("new", message="The two new passwords differ.")])


def end_every_session(user_id: int) -> None:
    """Make every session cookie of this account worthless (this process at once, others within the cache window)."""
    db.session.execute(update(User).where(User.id == user_id).values(session_version=User.session_version + 1))
    db.session.commit()
    signed_in.forget(user_id)


@cache
def _dummy_hash() -> str:
    """A hash of nothing anyone types, made the way real ones are (same method, same cost)."""
    return generate_password_hash("no account has this password")


def _account(email: str, password: str) -> User | None:
    """The account these credentials open, or None; as slow for an unknown e-mail as for a known one.

    Without the dummy check an unknown address answers in microseconds and a known one
    after a full password hash, which tells an attacker which e-mails have accounts.
    """
    user = db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return user if user.check_password(password) else None


def _safe_next(target: str | None) -> str:
    """Only follow a ``next`` that stays on this site."""
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("jobs.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form and log the user in."""
    if current_user.is_authenticated:
        return redirect(url_for("jobs.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = _account(form.email.data, form.password.data)
        if user is not None:
            # A token the visitor had before logging in must not be valid after (session fixation).
            session.pop("csrf_token", None)
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        note_failed_login()
        form.password.errors.append("Wrong e-mail or password.")
    return render_template("auth/login.html", form=form), (200 if not form.errors else 400)


@bp.post("/logout")
@login_required
def logout():
    """Log out here and everywhere else (a copied cookie stops working too), then show the login page."""
    end_every_session(current_user.id)
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    """Set a new password; every other session of the account ends, this one continues."""
    form = PasswordForm()
    if form.validate_on_submit():
        user = db.session.get(User, current_user.id)
        if user.check_password(form.current.data):
            user.set_password(form.new.data)
            db.session.commit()
            signed_in.forget(user.id)
            session.pop("csrf_token", None)
            login_user(user)
            flash("Password changed. Every other session of this account has been logged out.", "success")
            return redirect(url_for("jobs.index"))
        form.current.errors.append("That is not your current password.")
    return render_template("auth/password.html", form=form), (200 if not form.errors else 400)


@bp.get("/")
def home():
    """The front page is the job list."""
    return redirect(url_for("jobs.index"))
