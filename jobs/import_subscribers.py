"""Import subscribers from a CSV file: valid new addresses are added, every other line is explained.

Safe to run again: addresses already on the list are reported as such and not
duplicated (the unique index on lower(email) decides). Rows stream from storage
line by line; inserts go in chunks.
"""

from __future__ import annotations

import codecs
import csv
import logging
import uuid
from collections.abc import Iterator

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import text

from jobs.errors import JobFailed
from jobs.runtime import JobContext, job_entry
from webapp import storage
from webapp.extensions import db
from webapp.models import StoredFile

log = logging.getLogger(__name__)

CHUNK = 500
MAX_PROBLEMS = 500


def _lines(stored: StoredFile) -> Iterator[str]:
    """The file's text, line by line, decoded as UTF-8 (a BOM is ignored)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    pending = ""
    for chunk in storage.iter_file(stored):
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _insert(rows: list[tuple[str, str]]) -> set[str]:
    """Insert new subscribers; return the lower-cased addresses that were added."""
    if not rows:
        return set()
    added = db.session.execute(
        text("""
            INSERT INTO subscribers (email, name, active, created_at)
            SELECT e, n, true, now() FROM unnest(CAST(:emails AS text[]), CAST(:names AS text[])) AS t(e, n)
            ON CONFLICT (lower(email)) DO NOTHING
            RETURNING lower(email)
        """),
        {"emails": [r[0] for r in rows], "names": [r[1] for r in rows]},
    ).scalars().all()
    db.session.commit()
    return set(added)


@job_entry
def import_subscribers(ctx: JobContext) -> dict:
    """Read the CSV in ctx.params["file_id"] and add its valid new addresses."""
    stored = db.session.get(StoredFile, uuid.UUID(ctx.params["file_id"]))
    if stored is None:
        raise JobFailed("The uploaded file is gone.")
    problems: list[dict] = []
    seen: set[str] = set()
    counts = {"added": 0, "already": 0, "invalid": 0, "duplicate": 0, "lines": 0}
    chunk: list[tuple[int, str, str]] = []

    def note(line_no: int, value: str, reason: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append({"line": line_no, "value": value[:120], "reason": reason})

    def flush() -> None:
        added = _insert([(email, name) for _n, email, name in chunk])
        for line_no, email, _name in chunk:
            if email.lower() in added:
                counts["added"] += 1
            else:
                counts["already"] += 1
                note(line_no, email, "already subscribed")
        chunk.clear()

    reader = csv.reader(_lines(stored))
    for line_no, row in enumerate(reader, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        raw = row[0].strip()
        if line_no == 1 and raw.lower() in {"email", "e-mail", "email address"}:
            continue
        counts["lines"] += 1
        name = " ".join(row[1].split())[:200] if len(row) > 1 else ""
        try:
            email = validate_email(raw, check_deliverability=False, test_environment=True).normalized
        except EmailNotValidError as exc:
            counts["invalid"] += 1
            note(line_no, raw, f"invalid address: {exc}")
            continue
        if email.lower() in seen:
            counts["duplicate"] += 1
            note(line_no, raw, "duplicate of an earlier line")
            continue
        seen.add(email.lower())
        chunk.append((line_no, email, name))
        if len(chunk) >= CHUNK:
            flush()
            ctx.progress(counts["lines"], None, f"{counts['lines']:,} lines read")
    flush()
    summary = (f"{counts['added']:,} added, {counts['already']:,} already subscribed, "
               f"{counts['invalid']:,} invalid, {counts['duplicate']:,} duplicate lines")
    return {**counts, "problems": problems, "summary": summary}
