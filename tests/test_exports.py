"""Exporting orders to CSV: from the form to a downloadable file, through a real worker."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, timedelta

from tests.factories import add_orders, seed_many_orders
from webapp.extensions import db
from webapp.models import Job, StoredFile


def submit_export(client, date_from="2026-01-01", date_to="2026-12-31", status=""):
    """Post the export form like a browser; return the job id from the redirect."""
    response = client.post("/exports/new", {"date_from": date_from, "date_to": date_to, "status": status},
                           form_page="/exports/new")
    assert response.status_code == 303, response.get_data(as_text=True)
    return uuid.UUID(response.headers["Location"].rsplit("/", 1)[-1])


def job_json(client, job_id):
    """The job row as the JSON API shows it."""
    response = client.get(f"/jobs/{job_id}", headers={"Accept": "application/json"})
    assert response.status_code == 200
    return response.get_json()


def download_csv(client, file_id) -> list[list[str]]:
    """Download an export and parse it the way a spreadsheet would."""
    response = client.get(f"/files/{file_id}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))))


def test_export_answers_at_once_with_a_queued_job_page(as_alice):
    """Submitting the form returns the job page immediately, with the job queued and polling."""
    job_id = submit_export(as_alice)
    page = as_alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Queued" in page
    assert 'hx-trigger="every 1s"' in page
    assert job_json(as_alice, job_id)["status"] == "queued"


def test_worker_exports_every_matching_row_with_the_right_columns(app, as_alice, burst_worker):
    """A worker writes a CSV with a header and exactly the orders in the range and status."""
    add_orders(app, [
        ("Anna Müller", "2026-03-01T10:00:00", "paid", 2, "19.90"),
        ("Γιώργος Παπαδόπουλος", "2026-03-02T11:00:00", "paid", 1, "5.00"),
        ("Иван Смирнов", "2026-03-03T12:00:00", "shipped", 3, "120.00"),
        ("Out Of Range", "2025-12-31T23:59:59", "paid", 1, "1.00"),
    ])
    job_id = submit_export(as_alice, "2026-03-01", "2026-03-31", "paid")
    burst_worker()
    row = job_json(as_alice, job_id)
    assert row["status"] == "succeeded", row
    assert row["result"]["rows"] == 2
    assert row["progress"]["percent"] == 100
    table = download_csv(as_alice, row["result"]["file_id"])
    assert table[0] == ["order_id", "created_at", "status", "customer_name", "customer_email", "country",
                        "items", "total", "currency"]
    assert [r[3] for r in table[1:]] == ["Anna Müller", "Γιώργος Παπαδόπουλος"]
    assert table[1][1] == "2026-03-01T10:00:00Z"
    assert table[1][7] == "19.90"


def test_formula_like_names_are_neutralised_for_spreadsheets(app, as_alice, burst_worker):
    """Names starting with =, +, -, @ open as text in a spreadsheet, not as formulas."""
    add_orders(app, [
        ('=HYPERLINK("http://evil.example","x")', "2026-05-01T00:00:00", "paid", 1, "1.00"),
        ("+1 555", "2026-05-01T00:00:01", "paid", 1, "-2.00"),
        ("-minus", "2026-05-01T00:00:02", "paid", 1, "3.00"),
        ("@handle", "2026-05-01T00:00:03", "paid", 1, "4.00"),
        ('Line\nbreak, "quoted"', "2026-05-01T00:00:04", "paid", 1, "5.00"),
    ])
    job_id = submit_export(as_alice, "2026-05-01", "2026-05-01")
    burst_worker()
    row = job_json(as_alice, job_id)
    table = download_csv(as_alice, row["result"]["file_id"])
    names = [r[3] for r in table[1:]]
    assert names == ["'=HYPERLINK(\"http://evil.example\",\"x\")", "'+1 555", "'-minus", "'@handle",
                     'Line\nbreak, "quoted"']
    assert table[2][7] == "-2.00", "numbers stay numbers"


def test_an_export_with_no_matching_rows_succeeds_with_a_header_only_file(app, as_alice, burst_worker):
    """An empty range is not an error: the file has the header and the page says 0 rows."""
    job_id = submit_export(as_alice, "1999-01-01", "1999-01-31")
    burst_worker()
    row = job_json(as_alice, job_id)
    assert row["status"] == "succeeded"
    assert row["result"]["rows"] == 0
    assert "0 rows" in row["result"]["summary"]
    assert len(download_csv(as_alice, row["result"]["file_id"])) == 1
    page = as_alice.get(f"/jobs/{job_id}/status")
    assert page.status_code == 286, "polling stops at a terminal state"
    assert "hx-trigger" not in page.get_data(as_text=True)
    assert "0 rows" in page.get_data(as_text=True)


def test_a_large_export_reports_progress_and_streams(app, as_alice, burst_worker):
    """20,000 rows export completely and the progress total is the row count."""
    seed_many_orders(app, 20_000)
    today = date.today()
    job_id = submit_export(as_alice, (today - timedelta(days=60)).isoformat(), (today + timedelta(days=1)).isoformat())
    burst_worker()
    row = job_json(as_alice, job_id)
    assert row["status"] == "succeeded"
    assert row["progress"]["total"] == 20_000
    assert len(download_csv(as_alice, row["result"]["file_id"])) == 20_001


def test_malformed_dates_show_inline_messages_and_queue_nothing(app, as_alice):
    """Bad dates come back as form errors next to the fields; no job is created."""
    response = as_alice.post("/exports/new", {"date_from": "2026-13-45", "date_to": "yesterday"},
                             form_page="/exports/new")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "field-error" in page
    backwards = as_alice.post("/exports/new", {"date_from": "2026-05-01", "date_to": "2026-04-01"},
                              form_page="/exports/new")
    assert "The end date is before the start date." in backwards.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(Job).count() == 0


def test_a_cancelled_export_leaves_no_file(app, as_alice, burst_worker):
    """Cancelling a queued export means it never runs and no file is stored."""
    job_id = submit_export(as_alice)
    response = as_alice.post(f"/jobs/{job_id}/cancel", form_page=f"/jobs/{job_id}")
    assert response.status_code == 303
    burst_worker()
    row = job_json(as_alice, job_id)
    assert row["status"] == "cancelled"
    with app.app_context():
        assert db.session.query(StoredFile).count() == 0
