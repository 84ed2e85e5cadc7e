"""Import subscribers from a CSV file: valid new addresses are added, every other line is explained.

Takes what spreadsheets and mail tools write: UTF-8 with or without a byte-order mark,
UTF-16 (Excel's "Unicode text"), CR, LF or CRLF line endings, ``,``, ``;`` or tab between
columns, an optional header naming the e-mail and name columns. A line that cannot be
used (a NUL byte, a bad address, a duplicate) is reported with its line number and
reason; a file that is not text at all fails at once with a clear message (JobFailed,
never retried).

Safe to run again: addresses already on the list are reported as such and not
duplicated (the unique index on lower(email) decides). Rows stream from storage
line by line; inserts go in chunks.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import unicodedata
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
EMAIL_HEADERS = {"email", "e-mail", "email address", "e-mail address", "mail"}
NAME_HEADERS = {"name", "full name", "first name"}
# Bytes looked at to tell the encoding and the delimiter.
SNIFF_BYTES = 4096


class _ChunkReader(io.RawIOBase):
    """The stored file as a readable binary stream, read chunk by chunk from storage."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        """This stream can be read."""
        return True

    def readinto(self, buffer) -> int:
        """Fill ``buffer`` from the next chunks; 0 at the end."""
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _head(stored: StoredFile) -> bytes:
    """The first few kilobytes of the file."""
    head = b""
    for chunk in storage.iter_file(stored):
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    return head[:SNIFF_BYTES]


def _encoding(head: bytes) -> str:
    """The text encoding of a file that starts with ``head``; JobFailed for what is not text."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(b"PK\x03\x04"):
        raise JobFailed("This is an Excel workbook or another zip file, not a CSV file: "
                        "save it as CSV (UTF-8) and import that.")
    # UTF-16 without a byte-order mark: every other byte of ASCII text is zero.
    pairs = len(head) // 2
    if pairs >= 4:
        if sum(1 for i in range(1, 2 * pairs, 2) if head[i] == 0) > pairs * 0.8:
            return "utf-16-le"
        if sum(1 for i in range(0, 2 * pairs, 2) if head[i] == 0) > pairs * 0.8:
            return "utf-16-be"
    return "utf-8-sig"  # also reads UTF-8 without a BOM


def _delimiter(first_line: str) -> str:
    """``;`` or a tab when the first line uses it more than commas (Excel in much of Europe); else ``,``."""
    counts = {sep: first_line.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] > counts[","] else ","


def _printable(value: str) -> str:
    """``value`` fit to show and to store: control characters (NUL included) as U+FFFD, at most 120 characters."""
    return "".join("\ufffd" if unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t" else ch
                   for ch in value[:120])


def _text_lines(stored: StoredFile, encoding: str, errors: str = "strict") -> Iterator[str]:
    """The file's lines, decoded, each ending at CR, LF or CRLF as the file has them."""
    raw = io.BufferedReader(_ChunkReader(iter(storage.iter_file(stored))), buffer_size=64 * 1024)
    # newline="": lines split at any of the three endings and are handed over as they are, so the
    # csv module sees a quoted line break as data and a bare CR (classic Mac) as the end of a line.
    yield from io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="")


def _check_decodes(stored: StoredFile, encoding: str) -> None:
    """JobFailed, naming the first bad line, unless the whole file decodes: checked before anything is added."""
    if encoding.startswith("utf-16"):
        try:
            for _line in _text_lines(stored, encoding):
                pass
        except UnicodeDecodeError:
            raise JobFailed("The file starts as UTF-16 text but is not UTF-16 throughout: export it again "
                            "as CSV (UTF-8) and import that.") from None
        return
    # surrogateescape turns each undecodable byte into a lone surrogate, so the line can be named.
    for line_no, line in enumerate(_text_lines(stored, encoding, "surrogateescape"), start=1):
        if any("\udc80" <= ch <= "\udcff" for ch in line):
            raise JobFailed(f"Line {line_no} is not UTF-8 text (perhaps the file was saved as ANSI or Latin-1): "
                            "save it as CSV (UTF-8) and import it again.")


def _columns(header: list[str]) -> tuple[int, int | None] | None:
    """(email column, name column) when ``header`` is a header line, else None."""
    names = [cell.strip().lower() for cell in header]
    email = next((i for i, n in enumerate(names) if n in EMAIL_HEADERS), None)
    if email is None:
        return None
    name = next((i for i, n in enumerate(names) if n in NAME_HEADERS), None)
    return email, name


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
    head = _head(stored)
    encoding = _encoding(head)
    _check_decodes(stored, encoding)
    first_line = (head.decode(encoding, errors="replace").lstrip("\ufeff").splitlines() or [""])[0]
    problems: list[dict] = []
    seen: set[str] = set()
    counts = {"added": 0, "already": 0, "invalid": 0, "duplicate": 0, "lines": 0}
    chunk: list[tuple[int, str, str]] = []

    def note(line_no: int, value: str, reason: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append({"line": line_no, "value": _printable(value), "reason": reason})

    def flush() -> None:
        added = _insert([(email, name) for _n, email, name in chunk])
        for line_no, email, _name in chunk:
            if email.lower() in added:
                counts["added"] += 1
            else:
                counts["already"] += 1
                note(line_no, email, "already subscribed")
        chunk.clear()

    reader = csv.reader(_text_lines(stored, encoding), delimiter=_delimiter(first_line))
    email_col: int = 0
    name_col: int | None = 1
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # an over-long field, say; the reader carries on with the next line
            counts["invalid"] += 1
            note(reader.line_num, "", f"unreadable line: {exc}")
            continue
        line_no = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if line_no == 1 and (columns := _columns(row)) is not None:
            email_col, name_col = columns
            continue
        counts["lines"] += 1
        raw = row[email_col].strip() if email_col < len(row) else ""
        if any("\x00" in cell for cell in row):
            counts["invalid"] += 1
            note(line_no, raw, "contains a NUL byte (not text)")
            continue
        name = " ".join(row[name_col].split())[:200] if name_col is not None and name_col < len(row) else ""
        name = "".join(ch for ch in name if unicodedata.category(ch) != "Cc")
        try:
            email = validate_email(raw, check_deliverability=False, test_environment=True).normalized
        except EmailNotValidError as exc:
            counts["invalid"] += 1
            note(line_no, raw, f"invalid address: {exc}" if raw else "no e-mail address")
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
    if counts["lines"] == 0:
        raise JobFailed("The file has no lines with an e-mail address: is it the right file?")
    summary = (f"{counts['added']:,} added, {counts['already']:,} already subscribed, "
               f"{counts['invalid']:,} invalid, {counts['duplicate']:,} duplicate lines")
    return {**counts, "problems": problems, "summary": summary}
