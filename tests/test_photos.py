"""Photos: upload many, a CPU worker makes the variants, the gallery shows them; bad uploads leave nothing."""

from __future__ import annotations

import io
import re

from PIL import Image

from webapp.extensions import db
from webapp.models import Job, Photo, StoredFile


def jpeg_bytes(size=(1200, 800), color=(200, 30, 30)) -> bytes:
    """A real JPEG."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


def png_bytes(size=(640, 480)) -> bytes:
    """A real PNG with transparency."""
    out = io.BytesIO()
    Image.new("RGBA", size, (0, 120, 255, 128)).save(out, "PNG")
    return out.getvalue()


def upload(client, *files: tuple[str, bytes]):
    """Post the upload form with these (name, bytes) files."""
    data = {"photos": [(io.BytesIO(content), name) for name, content in files]}
    return client.post("/photos/", data, form_page="/photos/", content_type="multipart/form-data")


def test_uploading_two_photos_gives_two_cards_that_fill_in(app, as_alice, burst_worker):
    """Two photos become two jobs on the cpu queue; after the worker, each card shows a thumbnail."""
    response = upload(as_alice, ("shoe.jpg", jpeg_bytes()), ("bag.png", png_bytes()))
    assert response.status_code == 303
    gallery = as_alice.get("/photos/").get_data(as_text=True)
    assert "2 photos uploaded" in gallery
    assert gallery.count('class="card photo-card"') == 2
    assert gallery.count('hx-trigger="every 1s"') == 2, "each card polls while it is processing"
    with app.app_context():
        assert {j.queue for j in db.session.scalars(db.select(Job))} == {"cpu"}
    burst_worker("cpu")
    gallery = as_alice.get("/photos/").get_data(as_text=True)
    assert gallery.count("<img ") == 2
    assert gallery.count('hx-trigger="every 1s"') == 0, "finished cards stop polling"
    with app.app_context():
        photos = db.session.scalars(db.select(Photo).order_by(Photo.filename)).all()
        bag, shoe = photos
        assert (shoe.width, shoe.height, shoe.format) == (1200, 800, "jpeg")
        assert set(shoe.variants) == {"thumb", "medium", "large"}
        assert shoe.variants["large"]["width"] == 1200, "never upscaled"
        assert shoe.variants["thumb"]["width"] == 320
        assert set(shoe.variants["thumb"]["files"]) == {"jpeg", "webp"}
        thumb_id = shoe.variants["thumb"]["files"]["webp"]
        shoe_id = shoe.id
    thumb = as_alice.get(f"/files/{thumb_id}?inline=1")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(thumb.get_data())).size == (320, 213)
    card = as_alice.get(f"/photos/{shoe_id}/card")
    assert card.status_code == 286


def test_another_users_photo_and_its_files_are_not_found(app, as_alice, as_bob, burst_worker):
    """Bob can neither see Alice's photo page nor download its variants."""
    upload(as_alice, ("private.jpg", jpeg_bytes()))
    burst_worker("cpu")
    with app.app_context():
        photo = db.session.scalar(db.select(Photo))
        file_id = photo.variants["medium"]["files"]["jpeg"]
        photo_id = photo.id
    assert as_bob.get(f"/photos/{photo_id}").status_code == 404
    assert as_bob.get(f"/files/{file_id}").status_code == 404
    assert "private.jpg" not in as_bob.get("/photos/").get_data(as_text=True)


def test_a_pdf_renamed_jpg_is_refused_at_upload_and_nothing_is_stored(app, as_alice):
    """The web process spots a PDF by its first bytes and says so; no file, photo or job is kept."""
    response = upload(as_alice, ("invoice.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n" + b"0" * 500))
    assert response.status_code == 303
    page = as_alice.get("/photos/").get_data(as_text=True)
    assert "invoice.jpg: not an image (looks like a PDF)" in page
    with app.app_context():
        assert db.session.query(StoredFile).count() == 0
        assert db.session.query(Photo).count() == 0


def heic_bytes(size=(900, 600), color=(30, 160, 60)) -> bytes:
    """A real HEIC, written by libheif's HEVC encoder as an iPhone would."""
    from pillow_heif import register_heif_opener
    register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "HEIF", quality=85)
    return out.getvalue()


def test_zero_bytes_and_a_photoshop_file_get_clear_messages(app, as_alice):
    """An empty file and a PSD are explained by name, not accepted."""
    upload(as_alice, ("empty.jpg", b""), ("mockup.psd", b"8BPS\x00\x01" + b"\x00" * 100))
    page = as_alice.get("/photos/").get_data(as_text=True)
    assert "empty.jpg: empty file" in page
    assert "mockup.psd: PSD files are not supported — export as JPEG or PNG" in page


def test_an_iphone_heic_upload_becomes_jpeg_and_webp_variants(app, as_alice, burst_worker):
    """A HEIC from an iPhone is accepted at upload and resized by the worker like any JPEG."""
    upload(as_alice, ("IMG_0001.HEIC", heic_bytes()))
    burst_worker("cpu")
    with app.app_context():
        photo = db.session.scalar(db.select(Photo))
        assert photo.job.status == "succeeded", photo.job.error
        assert (photo.width, photo.height, photo.format) == (900, 600, "heic")
        thumb_id = photo.variants["thumb"]["files"]["jpeg"]
    thumb = Image.open(io.BytesIO(as_alice.get(f"/files/{thumb_id}?inline=1").get_data()))
    assert thumb.size == (320, 213)
    r, g, b = thumb.convert("RGB").getpixel((100, 100))
    assert abs(r - 30) < 30 and abs(g - 160) < 30 and abs(b - 60) < 30


def test_a_truncated_jpeg_fails_with_its_reason_keeps_the_upload_and_retry_says_why_again(app, as_alice,
                                                                                        burst_worker):
    """A JPEG cut in half fails in the worker with a reason; the upload stays until its owner deletes the photo,
    so Retry runs again and gives the real reason instead of "the uploaded file is missing"."""
    whole = jpeg_bytes((2000, 1500))
    upload(as_alice, ("cut.jpg", whole[: len(whole) // 2]))
    burst_worker("cpu")
    with app.app_context():
        photo = db.session.scalar(db.select(Photo))
        assert photo.job.status == "failed"
        first_error = photo.job.error
        assert re.search(r"truncated|corrupt", first_error, re.I)
        assert db.session.query(StoredFile).count() == 1, "only the upload itself, no variant"
        photo_id, job_id = photo.id, photo.job.id
    card = as_alice.get(f"/photos/{photo_id}/card").get_data(as_text=True)
    assert first_error in card
    assert as_alice.post(f"/jobs/{job_id}/retry", form_page=f"/jobs/{job_id}").status_code in (302, 303)
    burst_worker("cpu")
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job.status == "failed"
        assert job.error == first_error
        assert "missing" not in job.error
    assert as_alice.post(f"/photos/{photo_id}/delete", form_page="/photos/").status_code in (302, 303)
    with app.app_context():
        assert db.session.query(StoredFile).count() == 0
        assert db.session.query(Photo).count() == 0


def test_an_upload_over_the_size_limit_is_explained(app, users):
    """A photo over PHOTO_MAX_MB is refused with the limit in the message; a huge request gets a friendly 413."""
    from tests.conftest import Browserless
    from webapp import create_app

    small = create_app({"TESTING": True, "PHOTO_MAX_MB": 1, "PHOTO_UPLOAD_MAX_BYTES": 3 * 1024 * 1024})
    client = Browserless(small.test_client())
    client.login("alice@example.com")
    upload(client, ("big.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * (1024 * 1024 + 10)))
    assert "big.jpg: larger than 1 MB" in client.get("/photos/").get_data(as_text=True)
    huge = upload(client, ("huge.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * (4 * 1024 * 1024)))
    assert huge.status_code == 413
    assert "Upload too large" in huge.get_data(as_text=True)


def test_file_names_with_paths_and_unicode_are_kept_safe(app, as_alice, burst_worker):
    """A name like ../../etc/Ünïcödé.jpg is stored as just the file name, Unicode intact."""
    upload(as_alice, ("../../etc/Ünïcödé photo.jpg", jpeg_bytes()))
    with app.app_context():
        assert db.session.scalar(db.select(Photo.filename)) == "Ünïcödé photo.jpg"


def test_deleting_a_photo_removes_all_its_files(app, as_alice, burst_worker):
    """Delete removes the photo, the original and every variant."""
    upload(as_alice, ("gone.jpg", jpeg_bytes()))
    burst_worker("cpu")
    with app.app_context():
        photo_id = db.session.scalar(db.select(Photo.id))
        assert db.session.query(StoredFile).count() == 7
    response = as_alice.post(f"/photos/{photo_id}/delete", form_page=f"/photos/{photo_id}")
    assert response.status_code == 303
    with app.app_context():
        assert db.session.query(Photo).count() == 0
        assert db.session.query(StoredFile).count() == 0
