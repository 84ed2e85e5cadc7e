"""Storage: both backends stream files in and out by id, and an export works on each."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from tests.conftest import Browserless
from tests.test_exports import download_csv, job_json, submit_export
from webapp import storage
from webapp.extensions import db


class ChunkedSource(io.RawIOBase):
    """A readable stream of ``size`` pseudo-random bytes, produced chunk by chunk."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left, 64 * 1024)
        chunk = os.urandom(n)
        buffer[:n] = chunk
        self.digest.update(chunk)
        self.left -= n
        return n


@pytest.mark.parametrize("backend", ["local", "postgres"])
def test_a_file_goes_in_and_comes_back_identical(app, users, backend):
    """12 MB streamed into a backend reads back byte for byte and disappears when deleted."""
    app.config["STORAGE_BACKEND"] = backend
    try:
        with app.app_context():
            source = ChunkedSource(12 * 1024 * 1024)
            stored = storage.store_stream(users["alice"], source, "../../etc/passwd", "application/octet-stream")
            db.session.commit()
            assert stored.backend == backend and stored.size == 12 * 1024 * 1024
            assert stored.name == "passwd", "path parts are stripped from names"
            readback = hashlib.sha256()
            for chunk in storage.iter_file(stored):
                readback.update(chunk)
            assert readback.hexdigest() == source.digest.hexdigest()
            storage.delete_file(stored)
            db.session.commit()
            with pytest.raises(Exception):  # noqa: B017 - either backend's "not found"
                b"".join(storage.iter_file(stored))
    finally:
        app.config["STORAGE_BACKEND"] = "local"


def test_an_export_works_when_web_and_worker_share_only_the_database(app, users, monkeypatch, burst_worker):
    """With STORAGE_BACKEND=postgres the worker's CSV is downloadable by the web process."""
    from tests.factories import add_orders
    from webapp import create_app

    add_orders(app, [("Zoë Ångström", "2026-04-01T09:00:00", "paid", 1, "9.99")])
    monkeypatch.setenv("STORAGE_BACKEND", "postgres")
    monkeypatch.setenv("STORAGE_DIR", "/nonexistent/should-not-be-used")
    web = create_app({"TESTING": True})
    client = Browserless(web.test_client())
    client.login("alice@example.com")
    job_id = submit_export(client, "2026-04-01", "2026-04-01")
    burst_worker()
    row = job_json(client, job_id)
    assert row["status"] == "succeeded", row
    table = download_csv(client, row["result"]["file_id"])
    assert table[1][3] == "Zoë Ångström"


def test_download_names_are_safe_in_headers(app, users, as_alice):
    """A hostile file name cannot break the Content-Disposition header."""
    with app.app_context():
        stored = storage.store_stream(users["alice"], io.BytesIO(b"x"), 'évil"\r\nSet-Cookie: a=b.csv', "text/csv")
        db.session.commit()
        file_id = stored.id
    response = as_alice.get(f"/files/{file_id}")
    assert "Set-Cookie" not in response.headers
    disposition = response.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition
    assert "filename*=UTF-8''" in disposition
