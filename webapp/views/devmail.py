"""Development only: the messages the local SMTP sink received, so a new user sees their mail arrive.

Registered only when DEV_MAILBOX is on (development and the test suite; never in production), and
for admins only: it shows every message the app sent, to anyone.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template
from flask_login import current_user, login_required

bp = Blueprint("devmail", __name__, url_prefix="/dev/mailbox")

LIMIT = 200
# The sink names files <timestamp>-<counter>-<hex>; anything longer is not one of them.
MAX_ID_LENGTH = 100


@bp.before_request
@login_required
def admins_only():
    """Log in first; then administrators only."""
    if not current_user.is_admin:
        abort(403, "The dev mailbox is for administrators.")


def _folder() -> Path | None:
    """Where the sink writes .eml files (MAIL_SINK_DIR)."""
    folder = current_app.config.get("MAIL_SINK_DIR")
    return Path(folder) if folder else None


@bp.get("/")
def index():
    """The newest messages first."""
    folder = _folder()
    files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)[:LIMIT] \
        if folder and folder.is_dir() else []
    messages = []
    for path in files:
        with open(path, "rb") as fh:
            msg = email.message_from_binary_file(fh, policy=email.policy.default)
        messages.append({"id": path.stem, "subject": msg["Subject"], "to": msg["To"], "date": msg["Date"]})
    return render_template("devmail/index.html", messages=messages, folder=folder)


@bp.get("/<message_id>")
def show(message_id: str):
    """One message: headers, the HTML part in a sandboxed frame, and the text part."""
    folder = _folder()
    if (not folder or len(message_id) > MAX_ID_LENGTH
            or not message_id.replace("-", "").replace("_", "").replace(".", "").isalnum()):
        abort(404, "No such message.")
    path = folder / f"{message_id}.eml"
    if not path.is_file():
        abort(404, "No such message.")
    with open(path, "rb") as fh:
        msg = email.message_from_binary_file(fh, policy=email.policy.default)
    html_part = msg.get_body(preferencelist=("html",))
    text_part = msg.get_body(preferencelist=("plain",))
    return render_template(
        "devmail/show.html", msg=msg, headers=[(k, v) for k, v in msg.items()],
        html=html_part.get_content() if html_part else None, text=text_part.get_content() if text_part else None,
    )
