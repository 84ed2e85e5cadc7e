"""Bounded retention: old finished jobs, their files and their history are pruned by policy."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import cast

from flask import current_app
from sqlalchemy import CursorResult, Delete, delete, select

from webapp import storage
from webapp.extensions import db
from webapp.models import Job, JobEvent, Photo, StoredFile
from webapp.models.job import TERMINAL, utcnow

log = logging.getLogger(__name__)


def prune(days: int | None = None, batch: int = 500) -> dict[str, int]:
    """Delete finished jobs older than ``days`` (default JOB_RETENTION_DAYS) with their output files.

    Photos are kept: a photo's files belong to the gallery, not to the job that made them.
    """
    days = current_app.config["JOB_RETENTION_DAYS"] if days is None else days
    cutoff = utcnow() - timedelta(days=days)
    counts = {"jobs": 0, "files": 0, "events": 0}
    while True:
        old = db.session.scalars(
            select(Job.id).where(Job.status.in_([s.value for s in TERMINAL]), Job.finished_at < cutoff,
                                 Job.parent_id.is_(None)).limit(batch)
        ).all()
        if not old:
            break
        photo_files = select(Photo.original_id).where(Photo.original_id.is_not(None))
        files = db.session.scalars(
            select(StoredFile).where(StoredFile.job_id.in_(old), StoredFile.id.not_in(photo_files))
        ).all()
        files = [f for f in files if not _belongs_to_photo(f)]
        for stored in files:
            storage.delete_file(stored)
        counts["files"] += len(files)
        counts["jobs"] += _deleted(delete(Job).where(Job.parent_id.in_(old)))
        counts["jobs"] += _deleted(delete(Job).where(Job.id.in_(old)))
        db.session.commit()
    counts["events"] = _deleted(delete(JobEvent).where(JobEvent.at < cutoff))
    db.session.commit()
    log.info("pruned %s", counts, extra={"event": "pruned"})
    return counts


def _belongs_to_photo(stored: StoredFile) -> bool:
    """True when a photo's variants refer to this file."""
    return db.session.scalar(
        select(Photo.id).where(Photo.variants.cast(db.Text).contains(str(stored.id))).limit(1)
    ) is not None


def _deleted(statement: Delete) -> int:
    """Run a DELETE and say how many rows it removed."""
    result = db.session.execute(statement)
    return cast(CursorResult, result).rowcount
