"""Photos: upload many at once, watch each become variants on a CPU worker, browse the gallery.

The web process never decodes pixels: it checks the size and the first bytes of each
upload, streams it to storage and queues one job per photo.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from webapp import queueing, storage
from webapp.access import visible
from webapp.extensions import db
from webapp.image_types import ImageRejected, sniff_image_type
from webapp.kinds import queue_for
from webapp.models import Photo, StoredFile
from webapp.views.jobs import STOP_POLLING

bp = Blueprint("photos", __name__, url_prefix="/photos")

GALLERY_PAGE = 60


def photo_or_404(photo_id: uuid.UUID) -> Photo:
    """The photo if the current user may see it; 404 otherwise."""
    photo = db.session.get(Photo, photo_id)
    if photo is None or not current_user.can_see(photo.owner_id):
        abort(404, "No such photo.")
    return photo


def _upload_size(upload: FileStorage) -> int:
    """The size of an upload (already spooled to disk by Werkzeug) without reading it."""
    stream = upload.stream
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    return size


def check_upload(upload: FileStorage) -> str:
    """Cheap checks only (size and magic bytes); returns the image type or raises ImageRejected."""
    size = _upload_size(upload)
    limit_mb = current_app.config["PHOTO_MAX_MB"]
    if size > limit_mb * 1024 * 1024:
        raise ImageRejected(f"larger than {limit_mb} MB ({size / 1024 / 1024:.1f} MB)")
    head = upload.stream.read(64)
    upload.stream.seek(0)
    return sniff_image_type(head)


@bp.get("/")
@login_required
def index():
    """The gallery with the upload form."""
    photos = db.session.scalars(
        visible(select(Photo), Photo.owner_id).order_by(Photo.created_at.desc()).limit(GALLERY_PAGE)
    ).all()
    return render_template("photos/index.html", photos=photos, max_mb=current_app.config["PHOTO_MAX_MB"],
                           max_files=current_app.config["PHOTO_MAX_FILES"])


@bp.post("/")
@login_required
def upload():
    """Store each acceptable photo and queue its resize; explain each rejected one."""
    files = [f for f in request.files.getlist("photos") if f and f.filename]
    if not files:
        flash("Choose one or more photos to upload.", "error")
        return redirect(url_for("photos.index"), code=303)
    if len(files) > current_app.config["PHOTO_MAX_FILES"]:
        flash(f"Upload at most {current_app.config['PHOTO_MAX_FILES']} photos at once.", "error")
        return redirect(url_for("photos.index"), code=303)
    accepted = 0
    for upload_file in files:
        name = storage.safe_filename(upload_file.filename or "photo")
        try:
            image_type = check_upload(upload_file)
        except ImageRejected as exc:
            flash(f"{name}: {exc}", "error")
            continue
        original = storage.store_stream(current_user.id, upload_file.stream, name, f"image/{image_type}")
        photo = Photo(owner_id=current_user.id, original_id=original.id, filename=name, bytes=original.size,
                      format=image_type)
        db.session.add(photo)
        db.session.commit()
        # The first few photos of an upload are interactive work, the rest of a big upload is bulk.
        job = queueing.submit("resize_photo", current_user.id, {"photo_id": str(photo.id)}, name,
                              queue=queue_for("resize_photo", position_in_upload=accepted))
        photo.job_id = job.id
        db.session.commit()
        accepted += 1
    if accepted:
        flash(f"{accepted} photo{'s' if accepted != 1 else ''} uploaded; resizing in the background.", "success")
    return redirect(url_for("photos.index"), code=303)


@bp.get("/<uuid:photo_id>")
@login_required
def show(photo_id: uuid.UUID):
    """One photo: its variants, the original's facts and downloads."""
    photo = photo_or_404(photo_id)
    return render_template("photos/show.html", photo=photo)


@bp.get("/<uuid:photo_id>/card")
@login_required
def card(photo_id: uuid.UUID):
    """The gallery card that polls while its photo is processing (286 once done)."""
    photo = photo_or_404(photo_id)
    live = photo.job is not None and not photo.job.is_terminal
    return render_template("photos/_card.html", photo=photo), (200 if live else STOP_POLLING)


@bp.post("/<uuid:photo_id>/delete")
@login_required
def delete(photo_id: uuid.UUID):
    """Delete a photo and every file made from it."""
    photo = photo_or_404(photo_id)
    if photo.job is not None and not photo.job.is_terminal:
        queueing.cancel(photo.job.id)
    file_ids = [photo.original_id] + [
        uuid.UUID(fid) for variant in (photo.variants or {}).values() for fid in variant.get("files", {}).values()
    ]
    for stored in db.session.scalars(select(StoredFile).where(StoredFile.id.in_([f for f in file_ids if f]))):
        storage.delete_file(stored)
    db.session.delete(photo)
    db.session.commit()
    flash(f"{photo.filename} deleted.", "info")
    return redirect(url_for("photos.index"), code=303)
