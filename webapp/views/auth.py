"""Log in and out."""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from webapp.extensions import db
from webapp.forms import Form
from webapp.models import User
from webapp.throttle import note_failed_login

bp = Blueprint("auth", __name__)


class LoginForm(Form):
    """E-mail and password."""

    email = EmailField("E-mail", validators=[DataRequired(message="Enter your e-mail address.")])
    password = PasswordField("Password", validators=[DataRequired(message="Enter your password.")])


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
    """Log out and go back to the login page."""
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.get("/")
def home():
    """The front page is the job list."""
    return redirect(url_for("jobs.index"))
