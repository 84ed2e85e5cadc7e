"""Who is signed in: the account behind a session cookie, looked up for every request.

Every page and every submit asks which account is signed in (Flask-Login's user
loader), so the lookup is one prebuilt query, and a web process reuses an answer for
ACCOUNT_CACHE_SECONDS (1 s by default; 0 reads the row on every request). A revoked
admin right or a deleted account therefore takes effect within that time on every
process, and immediately in a process whose cache is cleared.
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
    return select(users.c.id, users.c.email, users.c.is_admin).where(users.c.id == bindparam("id"))


def _cache() -> dict[int, tuple[float, Row | None]]:
    """This app's answers by user id, with the time each was read."""
    return current_app.extensions.setdefault("signed_in", {})


def load(user_id: int) -> User | None:
    """The signed-in account as a User, or None when it no longer exists.

    The User holds id, email and is_admin and is not in the database session (a commit
    does not expire it and it is never written back); to change an account, load it
    with ``db.session.get``.
    """
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
    return None if row is None else User(id=row.id, email=row.email, is_admin=row.is_admin)


def forget() -> None:
    """Drop every cached answer in this process (the next request of each account reads its row)."""
    _cache().clear()
