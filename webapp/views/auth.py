"""Log in and out."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, select
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from webapp.extensions import db
from webapp.forms import Form
from webapp.models import User

bp = Blueprint("auth", __name__)


class LoginForm(Form):
    """E-mail and password."""

    email = EmailField("E-mail", validators=[DataRequired(message="Enter your e-mail address.")])
    password = PasswordField("Password", validators=[DataRequired(message="Enter your password.")])


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
        user = db.session.scalar(select(User).where(func.lower(User.email) == form.email.data.strip().lower()))
        if user is not None and user.check_password(form.password.data):
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
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
