"""Photos, newsletters and operations in a real browser, with screenshots for the README."""

from __future__ import annotations

import pytest

from tests.browser import login, screenshot
from tests.conftest import PASSWORD
from tests.test_newsletters import add_subscribers
from tests.test_photos import jpeg_bytes, png_bytes

pytestmark = pytest.mark.browser


def test_two_uploaded_photos_turn_into_thumbnails(app, users, live_server, start_worker, page, tmp_path):
    """Pick two photos, upload, and watch both cards fill in with thumbnails without reloading."""
    first, second = tmp_path / "red shoe.jpg", tmp_path / "blue-bag.png"
    first.write_bytes(jpeg_bytes((2400, 1600)))
    second.write_bytes(png_bytes((1200, 1200)))
    login(page, live_server, "alice@example.com", PASSWORD)
    page.get_by_role("link", name="Photos").click()
    page.set_input_files("input#photos", [str(first), str(second)])
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("2 of 2 uploaded").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.photo-card .spinner').length === 2")
    start_worker("cpu")
    page.wait_for_function("() => document.querySelectorAll('.photo-card img').length === 2", timeout=30_000)
    page.wait_for_function("() => [...document.querySelectorAll('.photo-card img')].every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, "photos-gallery")
    widths = page.eval_on_selector_all(".photo-card img", "imgs => imgs.map(i => i.naturalWidth).sort((a, b) => a - b)")
    assert widths == [320, 320]


def test_a_newsletter_send_shows_its_progress_and_report(app, users, live_server, start_worker, page, mailbox):
    """Compose, send to 300 subscribers and watch the counts reach 300 sent."""
    add_subscribers(app, 300)
    login(page, live_server, "alice@example.com", PASSWORD)
    page.get_by_role("link", name="Newsletters").click()
    page.get_by_role("link", name="Compose").first.click()
    page.get_by_label("Subject").fill("Autumn sale")
    page.get_by_role("button", name="Save and preview").click()
    page.get_by_role("button", name="Send to all subscribers").click()
    page.get_by_role("dialog").get_by_role("button", name="Send now").click()
    start_worker("fast", "bulk")
    page.wait_for_function("() => (document.querySelector('#send-progress')?.innerText || '').includes('300 sent')",
                           timeout=60_000)
    screenshot(page, "newsletter-sent")
    assert len(mailbox.messages) == 300


def test_the_operations_page_for_an_admin(app, users, live_server, start_worker, page):
    """An admin sees queues, workers and the throughput chart."""
    start_worker()
    login(page, live_server, "root@example.com", PASSWORD)
    page.get_by_role("link", name="Operations").click()
    page.get_by_label("Seconds of work").fill("0.5")
    page.get_by_role("button", name="Run self-test").click()
    page.get_by_text("Self-test passed").wait_for(timeout=30_000)
    page.get_by_role("link", name="Operations").click()
    assert page.locator("#ops-panel svg").count() == 1
    page.get_by_text("busy").or_(page.get_by_text("idle")).first.wait_for(timeout=30_000)
    screenshot(page, "operations")
