"""Who may see what: a user sees their own rows, an admin sees everyone's."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps

from flask import abort
from flask_login import current_user, login_required
from sqlalchemy import Select

from webapp.extensions import db
from webapp.models import Job, StoredFile


def visible(stmt: Select, owner_column) -> Select:
    """Restrict ``stmt`` to rows the current user may see."""
    if current_user.is_admin:
        return stmt
    return stmt.where(owner_column == current_user.id)


def job_or_404(job_id: uuid.UUID) -> Job:
    """The job if the current user may see it; 404 otherwise (never 403: ids are not confirmed)."""
    job = db.session.get(Job, job_id)
    if job is None or not current_user.can_see(job.owner_id):
        abort(404, "No such job.")
    return job


def file_or_404(file_id: uuid.UUID) -> StoredFile:
    """The stored file if the current user may see it; 404 otherwise."""
    stored = db.session.get(StoredFile, file_id)
    if stored is None or not current_user.can_see(stored.owner_id):
        abort(404, "No such file.")
    return stored


def admins_only(refusal: str) -> Callable:
    """A view decorator: log in first, then administrators only; others get 403 with ``refusal``."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not current_user.is_admin:
                abort(403, refusal)
            return view(*args, **kwargs)

        return wrapped

    return decorate
