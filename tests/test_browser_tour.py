"""A tour of the pages at desktop and phone size, saving a screenshot of each (docs/screenshots with
BACKHAUL_UPDATE_SCREENSHOTS=1); it checks that every page renders without a JavaScript error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import login, screenshot
from tests.conftest import PASSWORD
from tests.factories import seed_many_orders
from tests.test_newsletters import add_subscribers
from tests.test_photos import jpeg_bytes, png_bytes

pytestmark = pytest.mark.browser

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def shot(page, name: str) -> None:
    """A screenshot into tests/artifacts (or BACKHAUL_SHOTS_DIR, used for before/after sets)."""
    folder = os.environ.get("BACKHAUL_SHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)
    else:
        screenshot(page, name)


def test_a_tour_of_every_page_at_desktop_and_phone_size(app, users, live_server, start_worker, chromium, tmp_path):
    """Jobs, a job, photos, a photo, exports, reports, newsletters, subscribers and operations render at both
    sizes with no JavaScript error."""
    seed_many_orders(app, 300)
    add_subscribers(app, 12)
    first, second = tmp_path / "red shoe.jpg", tmp_path / "blue-bag.png"
    first.write_bytes(jpeg_bytes((2400, 1600)))
    second.write_bytes(png_bytes((1200, 1200)))
    start_worker()
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, live_server, "root@example.com", PASSWORD)
    page.goto(f"{live_server}/exports/new")
    page.locator("main form button[type=submit]").last.click()
    page.get_by_text("Download").first.wait_for(timeout=30_000)
    job_url = page.url
    page.goto(f"{live_server}/photos/")
    page.set_input_files("input#photos", [str(first), str(second)])
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_function("() => document.querySelectorAll('.photo-card img').length === 2", timeout=30_000)
    photo_url = page.locator(".photo-card a").first.get_attribute("href")
    page.goto(f"{live_server}/newsletters/new")
    page.get_by_label("Subject").fill("Autumn sale")
    page.locator("main form button[type=submit]").last.click()
    newsletter_url = page.url
    pages = {"jobs": "/jobs/", "job": job_url, "photos": "/photos/", "photo": photo_url, "export-form": "/exports/new",
             "report-form": "/reports/new", "newsletters": "/newsletters/", "newsletter-draft": newsletter_url,
             "subscribers": "/subscribers/", "operations": "/ops/"}
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        for name, url in pages.items():
            page.goto(url if url.startswith("http") else f"{live_server}{url}")
            page.wait_for_load_state("networkidle")
            shot(page, f"tour-{name}-{size}")
    context.close()
    assert errors == []
