"""Photos, "Download all": a worker puts every finished photo in one ZIP, for its owner only."""

from __future__ import annotations

import io
import re
import zipfile

from PIL import Image

from tests.test_photos import jpeg_bytes, upload
from webapp.extensions import db
from webapp.models import Job

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)
FILE_LINK = re.compile(r'href="(/files/[0-9a-f-]{36})"')


def download_all(client, variant: str = "large") -> str:
    """Click a "Download all" button in the gallery; the job page it leads to."""
    response = client.post("/photos/download-all", {"variant": variant}, form_page="/photos/")
    assert response.status_code == 303
    return response.headers["Location"]


def open_zip(client, job_page: str) -> tuple[str, zipfile.ZipFile]:
    """Follow the job page's download link; the link and the ZIP it gives."""
    page = client.get(job_page).get_data(as_text=True)
    match = FILE_LINK.search(page)
    assert match, f"no download link on the job page: {page[-2000:]}"
    response = client.get(match.group(1))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    return match.group(1), zipfile.ZipFile(io.BytesIO(response.get_data()))


def colour_of(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """The size and centre colour of one member, opened with Pillow."""
    with archive.open(name) as member:
        image = Image.open(io.BytesIO(member.read()))
        image.load()
    return image.size, image.convert("RGB").getpixel((image.width // 2, image.height // 2))


def near(actual: tuple[int, int, int], wanted: tuple[int, int, int]) -> bool:
    """Same colour after JPEG round trips."""
    return all(abs(a - w) < 30 for a, w in zip(actual, wanted, strict=True))


def test_download_all_zips_every_photo_with_unique_names_for_its_owner_only(app, as_alice, as_bob, burst_worker):
    """Three JPEGs, two called shoe.jpg: the ZIP holds shoe.jpg, bag.jpg, shoe (2).jpg as large JPEGs that open,
    the originals ZIP holds them at full size, and Bob cannot download either."""
    for name, colour in (("shoe.jpg", RED), ("bag.jpg", GREEN), ("shoe.jpg", BLUE)):
        assert upload(as_alice, (name, jpeg_bytes((2000, 1000), colour))).status_code == 303
    burst_worker("cpu")
    gallery = as_alice.get("/photos/").get_data(as_text=True)
    assert "Download all" in gallery
    large_page, originals_page = download_all(as_alice), download_all(as_alice, "original")
    burst_worker("default")

    page = as_alice.get(large_page).get_data(as_text=True)
    assert "3 photos (large JPEGs)" in page and "Download ZIP" in page
    link, archive = open_zip(as_alice, large_page)
    assert archive.namelist() == ["shoe.jpg", "bag.jpg", "shoe (2).jpg"]
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}, "JPEGs are not deflated"
    assert archive.testzip() is None
    for name, colour in (("shoe.jpg", RED), ("bag.jpg", GREEN), ("shoe (2).jpg", BLUE)):
        size, centre = colour_of(archive, name)
        assert size == (1600, 800), f"{name} is the large variant"
        assert near(centre, colour), f"{name} is the photo uploaded under that name"
    assert as_bob.get(link).status_code == 404

    originals_link, originals = open_zip(as_alice, originals_page)
    assert originals.namelist() == ["shoe.jpg", "bag.jpg", "shoe (2).jpg"]
    assert [colour_of(originals, name)[0] for name in originals.namelist()] == [(2000, 1000)] * 3
    assert as_bob.get(originals_link).status_code == 404
    assert "2 photo ZIPs ready" in as_alice.get("/jobs/announcements").get_data(as_text=True)
    with app.app_context():
        jobs = db.session.scalars(db.select(Job).where(Job.kind == "zip_photos")).all()
        assert {(job.status, job.queue, job.attempts) for job in jobs} == {("succeeded", "default", 1)}


def test_an_account_with_no_photos_is_told_there_is_nothing_to_zip(app, as_bob, burst_worker):
    """Without photos there is no button; a request anyway fails once, clearly, and is not retried."""
    assert "Download all" not in as_bob.get("/photos/").get_data(as_text=True)
    assert as_bob.post("/photos/download-all", {"variant": "thumbs"}, form_page="/photos/").status_code == 400
    job_page = download_all(as_bob)
    burst_worker("default")
    page = as_bob.get(job_page).get_data(as_text=True)
    assert "There are no finished photos to download yet" in page
    assert 'href="/files/' not in page
    assert "Photo ZIP “All photos (large JPEGs)” failed" in as_bob.get("/jobs/announcements").get_data(as_text=True)
    with app.app_context():
        job = db.session.scalar(db.select(Job).where(Job.kind == "zip_photos"))
        assert (job.status, job.attempts, job.result) == ("failed", 1, None)
