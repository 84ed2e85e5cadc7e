"""Export orders to CSV with PostgreSQL's COPY, streamed to a file, never held in memory.

The file is written in the job's scratch folder and moved into storage only when
complete, so a crashed or cancelled export leaves nothing to download. Text that
a spreadsheet would run as a formula (=, +, -, @, tab, CR at the start) is
prefixed with a quote, in SQL, so COPY keeps its speed.
"""

from __future__ import annotations

import logging
from contextlib import closing
from datetime import UTC, date, datetime, time, timedelta

from jobs.runtime import JobContext, job_entry
from webapp import storage
from webapp.extensions import db

log = logging.getLogger(__name__)

COLUMNS = ("order_id", "created_at", "status", "customer_name", "customer_email", "country", "items", "total",
           "currency")
BOM = "\ufeff".encode()  # lets Excel recognise UTF-8; other spreadsheets ignore it


def _safe(column: str) -> str:
    """SQL that neutralises spreadsheet formulas in a text column."""
    return f"CASE WHEN {column} ~ '^[=+@\\t\\r-]' THEN '''' || {column} ELSE {column} END"


def _where(params: dict) -> tuple[str, dict]:
    """The WHERE clause and its parameters for the export's filters."""
    start = datetime.combine(date.fromisoformat(params["date_from"]), time.min, tzinfo=UTC)
    end = datetime.combine(date.fromisoformat(params["date_to"]) + timedelta(days=1), time.min, tzinfo=UTC)
    clause = "o.created_at >= %(start)s AND o.created_at < %(end)s"
    values = {"start": start, "end": end}
    if params.get("status"):
        clause += " AND o.status = %(status)s"
        values["status"] = params["status"]
    return clause, values


def export_query(params: dict) -> tuple[str, dict]:
    """The SELECT behind the export (one join, no per-row lookups)."""
    where, values = _where(params)
    sql = f"""
        SELECT o.id, to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), o.status,
               {_safe('c.name')}, {_safe('c.email')}, c.country, o.items, o.total, o.currency
        FROM orders o JOIN customers c ON c.id = o.customer_id
        WHERE {where}
        ORDER BY o.created_at, o.id
    """
    return sql, values


class ProgressWriter:
    """A file wrapper that counts CSV rows as COPY writes them and reports progress."""

    def __init__(self, out, ctx: JobContext, total: int) -> None:
        self.out = out
        self.ctx = ctx
        self.total = total
        self.rows = 0

    def write(self, data: bytes | str) -> int:
        """Write a chunk, count its lines, and report progress (which also checks cancel)."""
        if isinstance(data, str):
            data = data.encode()
        self.rows += data.count(b"\n")
        self.ctx.progress(max(0, self.rows), self.total, "Exporting rows")
        return self.out.write(data)


@job_entry
def export_orders_csv(ctx: JobContext) -> dict:
    """Write every order matching ctx.params to a CSV file and store it."""
    params = ctx.params
    where, values = _where(params)
    raw = db.session.connection().connection
    with closing(raw.cursor()) as cur:
        cur.execute(f"SELECT count(*) FROM orders o WHERE {where}", values)
        (total,) = cur.fetchone() or (0,)
    db.session.commit()
    ctx.progress(0, total, f"Exporting {total:,} rows", force=True)
    sql, values = export_query(params)
    path = ctx.scratch / "orders.csv"
    # COPY gets a connection of its own: progress and cancel checks use the session's
    # connection while COPY is streaming.
    copy_conn = db.engine.raw_connection()
    try:
        with open(path, "wb") as out, closing(copy_conn.cursor()) as cur:
            out.write(BOM)
            out.write((",".join(COLUMNS) + "\n").encode())
            writer = ProgressWriter(out, ctx, total)
            copy_sql = cur.mogrify(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER false)", values).decode()
            cur.copy_expert(copy_sql, writer)
        copy_conn.commit()
    finally:
        copy_conn.close()
    rows = writer.rows
    ctx.progress(rows, total, "Saving the file", force=True)
    name = f"orders_{params['date_from']}_{params['date_to']}" + (f"_{params['status']}" if params.get("status") else "")
    stored = storage.store_path(ctx.owner_id, path, f"{name}.csv", "text/csv; charset=utf-8", job_id=ctx.job_id)
    # Not committed here: the runtime commits it together with the job's success.
    summary = "0 rows — no orders match these filters" if rows == 0 else f"{rows:,} rows exported"
    return {"file_id": str(stored.id), "rows": rows, "bytes": stored.size, "summary": summary}
