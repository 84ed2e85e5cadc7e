"""Schedules in a real browser: repeat a report from its form, see it listed, run it now, pause, delete."""

from __future__ import annotations

import pytest

from tests.browser import login, screenshot
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def test_a_weekly_report_is_scheduled_from_the_report_form_and_managed(app, users, live_server, start_worker, page):
    """Reports → Repeat this… → every Monday 07:00 Berlin → listed in words; run now gives a job that succeeds."""
    login(page, live_server, "alice@example.com", PASSWORD)
    page.get_by_role("link", name="Reports").click()
    page.get_by_role("link", name="Repeat this…").click()
    page.get_by_label("Repeat").select_option("weekly")
    page.get_by_label("At (HH:MM)").fill("07:00")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Period").select_option("last_week")
    screenshot(page, "schedule-form")
    page.get_by_role("button", name="Create schedule").click()
    assert "Every Monday at 07:00, Europe/Berlin" in page.content()

    page.get_by_role("link", name="Schedules", exact=True).click()
    row = page.locator("table.schedules tbody tr")
    assert row.count() == 1
    assert "Sales report for last week" in row.inner_text() and "active" in row.inner_text().lower()
    screenshot(page, "schedules")

    row.get_by_role("link").first.click()
    page.get_by_role("button", name="Run now").click()
    assert "Sales report (run now) — week" in page.content()
    start_worker("default")
    page.wait_for_selector(".badge-succeeded", timeout=60_000)

    page.get_by_role("link", name="Schedules", exact=True).click()
    page.locator("table.schedules tbody tr").get_by_role("link").first.click()
    page.get_by_role("button", name="Pause").click()
    assert "Paused by alice@example.com" in page.content()
    page.get_by_role("button", name="Delete").click()
    assert "No schedules yet" in page.content()
