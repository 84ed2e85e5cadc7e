"""Build a PDF sales report: totals, a revenue chart, a monthly summary and every order.

Revenue counts paid and shipped orders only; pending, cancelled and refunded orders are
counted and summed on their own lines, so the cover says exactly what each figure includes.

Aggregates come from a few GROUP BY queries; the order rows stream from a
server-side cursor in chunks (never a list of ORM objects) on a connection of
their own, so progress writes on the session's connection can interleave.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from jobs.errors import JobFailed
from jobs.report_pdf import build_sales_report
from jobs.runtime import JobContext, job_entry
from webapp import storage
from webapp.extensions import db

log = logging.getLogger(__name__)

CHUNK_ROWS = 2000
DAILY_UP_TO_DAYS = 92
# Orders whose money the shop has: the only ones in "revenue". (Statuses are fixed strings, not user data.)
REVENUE_STATUSES = ("paid", "shipped")
STATUS_ORDER = ("paid", "shipped", "pending", "cancelled", "refunded")
IN_REVENUE = "o.status IN ('paid', 'shipped')"


def _filters(params: dict) -> tuple[str, dict]:
    """WHERE clause (orders o JOIN customers c) and parameters for the report's filters."""
    try:
        first, last = date.fromisoformat(params["date_from"]), date.fromisoformat(params["date_to"])
    except (KeyError, TypeError, ValueError):
        raise JobFailed("The report period is not a valid pair of dates.") from None
    start = datetime.combine(first, time.min, tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    clause = "o.created_at >= %(start)s AND o.created_at < %(end)s"
    values: dict = {"start": start, "end": end}
    if params.get("status"):
        clause += " AND o.status = %(status)s"
        values["status"] = params["status"]
    if params.get("customer"):
        clause += " AND c.name ILIKE %(customer)s"
        values["customer"] = "%" + params["customer"].replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
    return clause, values


def _aggregates(cur, where: str, values: dict, daily: bool) -> tuple[dict, list, list]:
    """Totals (revenue = paid + shipped, the rest by status), the revenue chart and the monthly summary."""
    base = f"FROM orders o JOIN customers c ON c.id = o.customer_id WHERE {where}"
    cur.execute(f"SELECT o.status, o.currency, count(*), coalesce(sum(o.total), 0) {base} GROUP BY 1, 2", values)
    totals = _totals(cur.fetchall())
    bucket = "day" if daily else "month"
    label = "YYYY-MM-DD" if daily else "YYYY-MM"
    cur.execute(
        f"SELECT to_char(date_trunc('{bucket}', o.created_at AT TIME ZONE 'UTC'), '{label}'), "
        f"coalesce(sum(o.total) FILTER (WHERE {IN_REVENUE}), 0) {base} GROUP BY 1 ORDER BY 1", values,
    )
    series = [(row[0], Decimal(row[1])) for row in cur.fetchall()]
    cur.execute(
        f"SELECT to_char(date_trunc('month', o.created_at AT TIME ZONE 'UTC'), 'YYYY-MM'), count(*), "
        f"coalesce(sum(o.total) FILTER (WHERE {IN_REVENUE}), 0), "
        f"coalesce(sum(o.total) FILTER (WHERE o.status IN ('cancelled', 'refunded')), 0) "
        f"{base} GROUP BY 1 ORDER BY 1", values,
    )
    monthly = [(row[0], row[1], Decimal(row[2]), Decimal(row[3])) for row in cur.fetchall()]
    return totals, series, monthly


def _totals(rows: list[tuple[str, str, int, Decimal]]) -> dict:
    """Counts and sums per status from (status, currency, count, sum) rows, and the revenue they add up to."""
    by_status: dict[str, dict] = {}
    currencies: dict[str, Decimal] = {}
    for status, currency, count, amount in rows:
        entry = by_status.setdefault(status, {"orders": 0, "amount": Decimal(0)})
        entry["orders"] += count
        entry["amount"] += Decimal(amount)
        currencies[currency] = currencies.get(currency, Decimal(0)) + Decimal(amount)
    known = [s for s in STATUS_ORDER if s in by_status] + sorted(set(by_status) - set(STATUS_ORDER))
    paid = [by_status[s] for s in REVENUE_STATUSES if s in by_status]
    revenue = sum((entry["amount"] for entry in paid), Decimal(0))
    revenue_orders = sum(entry["orders"] for entry in paid)
    return {
        "orders": sum(entry["orders"] for entry in by_status.values()),
        "revenue": revenue,
        "revenue_orders": revenue_orders,
        "average": (revenue / revenue_orders).quantize(Decimal("0.01")) if revenue_orders else Decimal("0.00"),
        "by_status": [(status, by_status[status]["orders"], by_status[status]["amount"]) for status in known],
        # The report's money is in one currency; if the shop ever mixes them, the cover says so.
        "currency": " + ".join(sorted(currencies, key=lambda c: -currencies[c])) if currencies else "EUR",
    }


def _order_rows(conn, where: str, values: dict) -> Iterator[tuple]:
    """Every order in the report, streamed from a server-side cursor in chunks."""
    with conn.cursor(name="report_orders") as cur:
        cur.itersize = CHUNK_ROWS
        cur.execute(
            f"SELECT o.id, (o.created_at AT TIME ZONE 'UTC')::date, c.name, o.status, o.items, o.total "
            f"FROM orders o JOIN customers c ON c.id = o.customer_id WHERE {where} ORDER BY o.created_at, o.id",
            values,
        )
        yield from cur


@job_entry
def build_sales_report_pdf(ctx: JobContext) -> dict:
    """Build the report PDF for ctx.params and store it."""
    params = ctx.params
    where, values = _filters(params)
    days = (values["end"] - values["start"]).days
    conn = db.engine.raw_connection()
    try:
        with closing(conn.cursor()) as cur:
            totals, series, monthly = _aggregates(cur, where, values, daily=days <= DAILY_UP_TO_DAYS)
        ctx.progress(0, totals["orders"], f"Laying out {totals['orders']:,} orders", force=True)
        path = ctx.scratch / "report.pdf"
        period = f"{params['date_from']} to {params['date_to']}"
        filters = [f"status {params['status']}" if params.get("status") else "",
                   f"customer contains “{params['customer']}”" if params.get("customer") else ""]
        built = build_sales_report(
            path,
            title="Sales report",
            period_label=period + "".join(f" · {f}" for f in filters if f),
            generated_at=datetime.now(UTC),
            totals=totals,
            series=series,
            monthly=monthly,
            orders=_order_rows(conn, where, values),
            order_count=totals["orders"],
            progress=lambda done, total: ctx.progress(done, total, "Laying out orders"),
            check_cancelled=ctx.check_cancelled,
        )
        conn.commit()
    finally:
        conn.close()
    ctx.progress(totals["orders"], totals["orders"], "Saving the PDF", force=True)
    name = f"sales-report_{params['date_from']}_{params['date_to']}.pdf"
    stored = storage.store_path(ctx.owner_id, path, name, "application/pdf", job_id=ctx.job_id)
    # Not committed here: the runtime commits it together with the job's success.
    orders = totals["orders"]
    summary = (f"{built['pages']:,} pages, {orders:,} orders" if orders
               else f"{built['pages']} page — no orders in this period")
    by_status = {status: {"orders": count, "amount": str(amount)} for status, count, amount in totals["by_status"]}
    return {"file_id": str(stored.id), "pages": built["pages"], "orders": orders, "bytes": stored.size,
            "summary": summary, "currency": totals["currency"], "revenue": str(totals["revenue"]),
            "revenue_orders": totals["revenue_orders"], "by_status": by_status}
