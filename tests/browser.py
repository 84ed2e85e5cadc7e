"""Playwright driving Debian's Chromium (no browser download), plus screenshot helpers."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
DOC_SHOTS = ROOT / "docs" / "screenshots"


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under tests/artifacts (and docs/screenshots when asked to)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("BACKHAUL_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        (DOC_SHOTS / f"{name}.png").write_bytes(path.read_bytes())
    return path


def login(page, base_url: str, email: str, password: str, then: str = "/jobs/") -> None:
    """Log in through the real form, landing on ``then`` (as a link that asked for a login would)."""
    page.goto(f"{base_url}/login" + (f"?next={then}" if then != "/jobs/" else ""))
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}{then}")
