"""A person exports orders in a real browser: log in, submit, watch it queue and finish, download."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.browser import login, screenshot
from tests.conftest import PASSWORD
from tests.factories import seed_many_orders

pytestmark = pytest.mark.browser


def test_export_from_form_to_downloaded_csv(app, users, live_server, start_worker, page):
    """The job page says Queued at once, turns into a download link when a worker runs it, and the CSV is right."""
    seed_many_orders(app, 5_000)
    login(page, live_server, "alice@example.com", PASSWORD)
    screenshot(page, "jobs-empty")
    assert "No jobs yet" in page.content()

    page.get_by_role("link", name="Exports").click()
    page.get_by_label("From").fill("2000-01-01")
    page.get_by_label("From").fill("2020-01-01")
    page.get_by_label("To").fill("2029-12-31")
    page.get_by_role("button", name="Export to CSV").click()
    page.wait_for_url("**/jobs/*")
    status = page.locator("#job-status")
    assert "Queued" in status.inner_text()
    assert page.locator("progress.meter:indeterminate").count() == 1, "a moving bar while it waits"
    screenshot(page, "job-queued")

    start_worker("default")
    link = page.get_by_role("link", name="Download CSV")
    link.wait_for(timeout=30_000)
    assert "5,000 rows exported" in status.inner_text()
    screenshot(page, "job-succeeded")

    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename.startswith("orders_2020-01-01_2029-12-31")
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert rows[0][:3] == ["order_id", "created_at", "status"]
    assert len(rows) == 5_001

    page.get_by_role("link", name="Jobs").first.click()
    page.wait_for_url("**/jobs/")
    page.locator("table.table tbody tr").first.wait_for()
    assert page.locator("table.table tbody tr").count() == 1
    assert "Done" in page.locator("table.table").inner_text()
    screenshot(page, "jobs-list")


def test_validation_messages_show_next_to_the_fields(app, users, live_server, page):
    """A backwards date range is explained under the field, and nothing is queued."""
    login(page, live_server, "alice@example.com", PASSWORD)
    page.goto(f"{live_server}/exports/new")
    page.get_by_label("From").fill("2026-05-01")
    page.get_by_label("To").fill("2026-04-01")
    page.get_by_role("button", name="Export to CSV").click()
    assert page.locator(".field-error").inner_text() == "The end date is before the start date."
    screenshot(page, "export-form-error")
