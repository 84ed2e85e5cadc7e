"""Accounts: a person who logs in and owns jobs and files."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import Model


class User(UserMixin, Model):
    """A back-office account; admins see everyone's jobs and the operations pages."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(default=False)
    # Part of every session cookie (see get_id): raising it ends every session of the account.
    session_version: Mapped[int] = mapped_column(default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    def get_id(self) -> str:
        """What the session cookie stores: the account id and the session version it was issued for."""
        return f"{self.id}:{self.session_version or 1}"

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password``; sessions opened with the old one end."""
        if self.password_hash is not None:
            self.session_version = (self.session_version or 1) + 1
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    def can_see(self, owner_id: int | None) -> bool:
        """True when this user may see something owned by ``owner_id``."""
        return self.is_admin or owner_id == self.id
