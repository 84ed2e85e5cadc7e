"""Who is signed in: the account behind a session cookie, looked up for every request.

Every page and every submit asks which account is signed in (Flask-Login's user
loader), so the lookup is one prebuilt query, and a web process reuses an answer for
ACCOUNT_CACHE_SECONDS (1 s by default; 0 reads the row on every request). A revoked
admin right or a deleted account therefore takes effect within that time on every
process, and immediately in a process whose cache is cleared.

The session cookie also carries the account's session version (User.get_id): logging
out or setting a new password raises it, so every cookie issued before stops working
within the same window, on every process, copied or not.
"""

from __future__ import annotations

import time
from functools import cache

from flask import current_app
from sqlalchemy import Row, Select, bindparam, select

from webapp.extensions import db
from webapp.models import User

# A process serving thousands of accounts within one cache window starts the cache afresh.
MAX_CACHED = 10_000


@cache
def _statement() -> Select:
    """The account's columns by id: built and compiled once."""
    users = User.__table__
    return (select(users.c.id, users.c.email, users.c.is_admin, users.c.session_version)
            .where(users.c.id == bindparam("id")))


def _cache() -> dict[int, tuple[float, Row | None]]:
    """This app's answers by user id, with the time each was read."""
    return current_app.extensions.setdefault("signed_in", {})


def load(session_id: str) -> User | None:
    """The account a session cookie names ("<id>:<version>"), or None when it no longer exists or the
    session was ended (logged out, password changed).

    The User holds id, email, is_admin and session_version and is not in the database session
    (a commit does not expire it and it is never written back); to change an account, load it
    with ``db.session.get``.
    """
    raw_id, _, raw_version = session_id.partition(":")
    if len(session_id) > 40 or not (raw_id.isdecimal() and raw_version.isdecimal()):
        return None  # a cookie from before session versions, or not ours
    user_id, version = int(raw_id), int(raw_version)
    window = current_app.config["ACCOUNT_CACHE_SECONDS"]
    answers = _cache()
    now = time.monotonic()
    read_at, row = answers.get(user_id, (None, None))
    if read_at is None or now - read_at >= window:
        row = db.session.execute(_statement(), {"id": user_id}).first()
        if window > 0:
            if len(answers) >= MAX_CACHED:
                answers.clear()
            answers[user_id] = (now, row)
    if row is None or row.session_version != version:
        return None
    return User(id=row.id, email=row.email, is_admin=row.is_admin, session_version=row.session_version)


def forget(user_id: int | None = None) -> None:
    """Drop the cached answer for ``user_id`` (every answer when None) in this process."""
    if user_id is None:
        _cache().clear()
    else:
        _cache().pop(user_id, None)
