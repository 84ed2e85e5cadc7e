"""Accounts: a person who logs in and owns jobs and files."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from flask_login import UserMixin
from sqlalchemy import Select, String, bindparam, func, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db


class User(UserMixin, db.Model):
    """A back-office account; admins see everyone's jobs and the operations pages."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password``."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    def can_see(self, owner_id: int | None) -> bool:
        """True when this user may see something owned by ``owner_id``."""
        return self.is_admin or owner_id == self.id


@cache
def _signed_in_statement() -> Select:
    """The columns a request reads about its user, by id: built and compiled once."""
    users = User.__table__
    return select(users.c.id, users.c.email, users.c.is_admin).where(users.c.id == bindparam("id"))


def load_signed_in(user_id: int) -> User | None:
    """The logged-in user for one request, read afresh (a deleted account or a revoked admin
    right takes effect at the next request), or None when the account is gone.

    Runs on every request, so it skips the ORM's identity map: the User returned holds
    id, email and is_admin and is not in the session (a commit does not expire it and it
    is never written back). To change an account, load it with ``db.session.get``.
    """
    row = db.session.execute(_signed_in_statement(), {"id": user_id}).first()
    return None if row is None else User(id=row.id, email=row.email, is_admin=row.is_admin)
