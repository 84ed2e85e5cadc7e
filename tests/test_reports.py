"""Sales reports: a real PDF built by a worker, checked with poppler, and e-mailed only when it succeeded."""

from __future__ import annotations

import subprocess
import uuid

from tests.factories import add_orders
from tests.test_exports import job_json
from webapp import queueing
from webapp.extensions import db
from webapp.models import Job


def submit_report(client, **fields):
    """Post the report form like a browser; return the report job id."""
    data = {"date_from": "2026-03-01", "date_to": "2026-03-31", "status": "", "customer": "", "recipients": ""}
    data.update(fields)
    response = client.post("/reports/new", data, form_page="/reports/new")
    assert response.status_code == 303, response.get_data(as_text=True)
    return uuid.UUID(response.headers["Location"].rsplit("/", 1)[-1])


def pdf_text(client, file_id, tmp_path) -> tuple[dict, str]:
    """Download a PDF and read it with pdfinfo and pdftotext, as any viewer would."""
    path = tmp_path / "report.pdf"
    response = client.get(f"/files/{file_id}")
    assert response.headers["Content-Type"] == "application/pdf"
    path.write_bytes(response.get_data())
    info_lines = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    info = dict(line.split(":", 1) for line in info_lines.splitlines() if ":" in line)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, v in info.items()}, text


HOSTILE = [
    ("Anna Müller", "2026-03-01T10:00:00", "paid", 2, "19.90"),
    ("Γιώργος Παπαδόπουλος", "2026-03-02T11:00:00", "paid", 1, "5.00"),
    ("Иван Смирнов", "2026-03-03T12:00:00", "shipped", 3, "120.00"),
    ("<b>bold</b> & co", "2026-03-04T12:00:00", "paid", 1, "1.00"),
    ("x" * 2000, "2026-03-05T12:00:00", "paid", 1, "2.00"),
    ("bell\x07tab\tnul-free\x1b[31m", "2026-03-06T12:00:00", "paid", 1, "3.00"),
    ("שלום עולם", "2026-03-07T12:00:00", "paid", 1, "4.00"),
]


def test_a_report_prints_totals_every_order_and_page_numbers(app, as_alice, burst_worker, tmp_path):
    """The PDF opens in poppler, has 'page 1 of N', the totals, and names in Greek, Cyrillic and accents."""
    add_orders(app, HOSTILE)
    job_id = submit_report(as_alice)
    burst_worker()
    row = job_json(as_alice, job_id)
    assert row["status"] == "succeeded", row
    assert row["result"]["orders"] == 7
    info, text = pdf_text(as_alice, row["result"]["file_id"], tmp_path)
    pages = int(info["Pages"])
    assert pages == row["result"]["pages"] >= 2
    assert f"page 1 of {pages}" in text and f"page {pages} of {pages}" in text
    assert "154.90" in text, "revenue total on the cover"
    for name in ("Anna Müller", "Γιώργος Παπαδόπουλος", "Иван Смирнов", "<b>bold</b> & co"):
        assert name in text
    assert "xxxxxxxx…" in text, "a 2,000-character name is cut to its column"
    assert "\x07" not in text and "\x1b" not in text


def test_an_empty_period_gives_a_short_valid_report(app, as_alice, burst_worker, tmp_path):
    """No orders: a valid one-page PDF that says so, not an error."""
    job_id = submit_report(as_alice, date_from="1999-01-01", date_to="1999-01-31")
    burst_worker()
    row = job_json(as_alice, job_id)
    assert row["status"] == "succeeded"
    info, text = pdf_text(as_alice, row["result"]["file_id"], tmp_path)
    assert info["Pages"] == "1"
    assert "No orders in this period." in text
    assert "no orders in this period" in row["result"]["summary"]


def test_recipients_get_the_report_after_it_succeeds(app, as_alice, burst_worker, mailbox):
    """With recipients, a second job on the fast queue mails the PDF to each of them once."""
    add_orders(app, HOSTILE[:3])
    job_id = submit_report(as_alice, recipients="boss@example.com, accounts@example.com\nboss@example.com")
    burst_worker()
    with app.app_context():
        mail_job = db.session.scalar(db.select(Job).where(Job.depends_on_id == job_id))
        assert mail_job.queue == "fast" and mail_job.status == "succeeded", mail_job.error
    received = mailbox.messages
    assert sorted(m["To"] for m in received) == ["accounts@example.com", "boss@example.com"]
    attachment = next(received[0].iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content()[:5] == b"%PDF-"
    page = as_alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Report e-mailed (attached) to 2 recipients" in page


def test_the_email_is_skipped_when_the_report_fails(app, users, burst_worker, mailbox, as_alice):
    """A report that fails leaves its e-mail step cancelled with the reason, and nothing is sent."""
    with app.app_context():
        report = queueing.submit("sales_report", users["alice"], {"date_from": "not a date", "date_to": "x"}, "bad")
        mail = queueing.submit("mail_report", users["alice"],
                               {"report_job_id": str(report.id), "recipients": ["boss@example.com"]},
                               "E-mail to 1 recipient", depends_on=report)
        report_id, mail_id = report.id, mail.id
    burst_worker()
    with app.app_context():
        assert db.session.get(Job, report_id).status == "failed"
        skipped = db.session.get(Job, mail_id)
        assert skipped.status == "cancelled"
        assert "failed" in skipped.message
    assert mailbox.messages == []
    page = as_alice.get(f"/jobs/{report_id}").get_data(as_text=True)
    assert "The report period is not a valid pair of dates." in page
    assert "skipped: the job it depends on failed" in page


def test_invalid_recipients_are_explained_on_the_form(as_alice):
    """A malformed address is named under the field and nothing is queued."""
    response = as_alice.post("/reports/new", {"date_from": "2026-03-01", "date_to": "2026-03-31",
                                              "recipients": "boss@example.com, not-an-address"},
                             form_page="/reports/new")
    assert response.status_code == 400
    assert "not-an-address" in response.get_data(as_text=True)


def test_revenue_is_paid_and_shipped_only_and_matches_sql_sums(app, as_alice, burst_worker, tmp_path):
    """On generated orders of every status, the cover's revenue is the SQL sum of paid + shipped orders, in EUR;
    pending, cancelled and refunded are shown apart with their own sums, and the report says what counts."""
    from datetime import date, timedelta
    from decimal import Decimal

    from sqlalchemy import text as sql

    from tests.factories import seed_many_orders

    seed_many_orders(app, 3000)
    first, last = date.today() - timedelta(days=45), date.today() + timedelta(days=1)
    with app.app_context():
        sums = {status: (count, Decimal(total)) for status, count, total in db.session.execute(sql(
            "SELECT status, count(*), sum(total) FROM orders WHERE created_at >= :a AND created_at < :b "
            "GROUP BY status"), {"a": first, "b": last + timedelta(days=1)})}
        currencies = db.session.execute(sql("SELECT DISTINCT currency FROM orders")).scalars().all()
    assert {"paid", "shipped", "pending", "cancelled", "refunded"} <= set(sums), "the data has every status"
    assert currencies == ["EUR"]
    revenue = sums["paid"][1] + sums["shipped"][1]
    everything = sum(total for _count, total in sums.values())
    assert revenue < everything

    job_id = submit_report(as_alice, date_from=first.isoformat(), date_to=last.isoformat())
    burst_worker()
    row = job_json(as_alice, job_id)
    assert row["status"] == "succeeded", row
    assert Decimal(row["result"]["revenue"]) == revenue and row["result"]["currency"] == "EUR"
    assert row["result"]["revenue_orders"] == sums["paid"][0] + sums["shipped"][0]
    _info, text = pdf_text(as_alice, row["result"]["file_id"], tmp_path)
    cover = text.split("\f", 1)[0]
    assert f"{revenue:,.2f} EUR" in cover
    assert f"{everything:,.2f} EUR" not in cover, "cancelled, refunded and pending are not added in"
    lines = {line.split()[0]: line for line in cover.splitlines() if line.strip()}
    for status in ("Paid", "Shipped", "Pending", "Cancelled", "Refunded"):
        count, total = sums[status.lower()]
        assert f"{count:,}" in lines[status] and f"{total:,.2f}" in lines[status], lines[status]
    assert "not in revenue" in lines["Cancelled"] and "in revenue" in lines["Paid"]
    assert "Revenue is the sum of paid and shipped orders, in EUR" in cover
    assert "Total (EUR)" in text
