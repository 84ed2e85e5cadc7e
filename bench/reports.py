"""PDF reports: fpdf2's table() API against Backhaul's layout, at 50 / 500 pages and 100,000 orders."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bench.measure import measure

NAMES = ["Anna Müller", "Γιώργος Παπαδόπουλος", "Иван Смирнов", "José Fernández", "Zoë Ångström", "O'Brien & Co"]


def order_rows(count: int):
    """Synthetic order rows, generated as they are read."""
    for i in range(count):
        yield (i + 1, date(2026, 1, 1) + timedelta(days=i % 365), f"{NAMES[i % len(NAMES)]} {i % 997}",
               "paid", 1 + i % 9, Decimal(i % 50_000) / 100)


def table_api(path: str, count: int) -> dict:
    """fpdf2's table() with the same six columns (the baseline)."""
    from fpdf import FPDF

    from jobs.report_pdf import FONT_DIR

    pdf = FPDF()
    pdf.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSansCondensed.ttf"))
    pdf.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSansCondensed-Bold.ttf"))
    pdf.set_font("DejaVu", size=8.5)
    pdf.add_page()
    with pdf.table(col_widths=(20, 22, 84, 22, 12, 26), line_height=5.6) as table:
        table.row(["Order", "Date", "Customer", "Status", "Items", "Total"])
        for row in order_rows(count):
            table.row([str(row[0]), row[1].isoformat(), row[2], row[3], str(row[4]), f"{row[5]:,.2f}"])
    pdf.output(path)
    return {"pages": pdf.pages_count}


def backhaul(path: str, count: int) -> dict:
    """Backhaul's report layout (cover, chart, monthly summary, detail)."""
    from jobs.report_pdf import build_sales_report

    series = [(f"2026-{m:02d}", Decimal(1000 * m)) for m in range(1, 13)]
    monthly = [(f"2026-{m:02d}", count // 12, Decimal(1000 * m), Decimal(50 * m)) for m in range(1, 13)]
    # The same shape of figures as jobs/sales_report.py hands the layout.
    paid, other = count * 9 // 10, count - count * 9 // 10
    totals = {"orders": count, "revenue": Decimal("1234567.89"), "revenue_orders": paid, "average": Decimal("12.34"),
              "by_status": [("paid", paid, Decimal("1234567.89")), ("cancelled", other, Decimal("4567.10"))],
              "currency": "EUR"}
    built = build_sales_report(
        path, title="Sales report", period_label="2026-01-01 to 2026-12-31", generated_at=datetime.now(UTC),
        totals=totals,
        series=series, monthly=monthly, orders=order_rows(count), order_count=count,
    )
    return {"pages": built["pages"]}


def run(quick: bool = False) -> list[dict]:
    """The baseline and ours, in one run."""
    folder = Path(tempfile.mkdtemp(prefix="bench-reports-"))
    repeat = 1 if quick else 3
    rows = []
    baseline_rows = 400 if quick else 22_000
    result = measure("bench.reports:table_api", str(folder / "table.pdf"), baseline_rows, repeat=1)
    rows.append({"benchmark": "PDF report", "variant": "fpdf2 table() API", "size": f"{baseline_rows:,} rows",
                 **result, "pages": result["extra"]["pages"]})
    for count in ([400] if quick else [2_200, 22_000, 100_000]):
        result = measure("bench.reports:backhaul", str(folder / f"ours-{count}.pdf"), count, repeat=repeat)
        rows.append({"benchmark": "PDF report", "variant": "backhaul layout", "size": f"{count:,} rows",
                     **result, "pages": result["extra"]["pages"]})
    return rows
