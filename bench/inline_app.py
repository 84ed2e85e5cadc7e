"""Benchmark-only app: the product plus two routes that exist nowhere else.

- ``POST /inline/export`` and ``POST /inline/report`` do the CSV export or the PDF
  report inside the request (the "before" Backhaul exists to prevent), so the
  lunch-rush benchmark can compare;
- ``POST /bare/submit`` is a bare insert-then-enqueue route (no login, CSRF or
  template), the anchor for the saturation benchmark.
Served only by the benchmarks: ``gunicorn bench.inline_app:app``.
"""

from __future__ import annotations

import tempfile

from flask import Blueprint, Response

from bench import env
from webapp import create_app
from webapp.extensions import csrf, db

inline = Blueprint("bench_inline", __name__)


@inline.post("/inline/export")
def inline_export():
    """The same COPY export as the job, run in the request."""
    from jobs.export_orders import BOM, COLUMNS, export_query

    sql, values = export_query({"date_from": "2000-01-01", "date_to": "2099-12-31", "status": None})
    conn = db.engine.raw_connection()
    try:
        with tempfile.TemporaryFile() as out, conn.cursor() as cur:
            out.write(BOM + (",".join(COLUMNS) + "\n").encode())
            cur.copy_expert(cur.mogrify(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", values).decode(), out)
            size = out.tell()
        conn.commit()
    finally:
        conn.close()
    return Response(f"exported {size} bytes\n", mimetype="text/plain")


@inline.post("/inline/report")
def inline_report():
    """The same PDF report as the job (the lunch rush's period), built in the request."""
    from datetime import UTC, date, datetime, timedelta

    from jobs.report_pdf import build_sales_report
    from jobs.sales_report import _aggregates, _filters, _order_rows

    today = date.today()
    params = {"date_from": (today - timedelta(days=env.LUNCH_REPORT_DAYS)).isoformat(), "date_to": today.isoformat()}
    where, values = _filters(params)
    conn = db.engine.raw_connection()
    try:
        with conn.cursor() as cur:
            totals, series, monthly = _aggregates(cur, where, values, daily=True)
        with tempfile.TemporaryDirectory() as folder:
            built = build_sales_report(
                f"{folder}/report.pdf", title="Sales report", period_label=f"last {env.LUNCH_REPORT_DAYS} days",
                generated_at=datetime.now(UTC), totals=totals, series=series, monthly=monthly,
                orders=_order_rows(conn, where, values), order_count=totals["orders"])
        conn.commit()
    finally:
        conn.close()
    return Response(f"{built['pages']} pages\n", mimetype="text/plain")


@inline.post("/bare/submit")
def bare_submit():
    """Insert a job row and enqueue it: nothing else."""
    from rq import Queue
    from rq.serializers import JSONSerializer
    from sqlalchemy import text

    from webapp.queueing import redis_conn

    job_id = db.session.execute(text(
        "INSERT INTO jobs (id, kind, owner_id, status, queue, title, params, message, progress_done, attempts, "
        "max_attempts, runs, cancel_requested, created_at, updated_at) VALUES (gen_random_uuid(), 'selftest', "
        "(SELECT min(id) FROM users), 'queued', 'bare', '', '{}', '', 0, 0, 1, 0, false, now(), now()) RETURNING id"
    )).scalar_one()
    db.session.commit()
    Queue("bare", connection=redis_conn(), serializer=JSONSerializer).enqueue("bench.engine.noop", job_id=str(job_id))
    return Response("ok\n", mimetype="text/plain")


app = create_app()
csrf.exempt(inline)
app.register_blueprint(inline)
