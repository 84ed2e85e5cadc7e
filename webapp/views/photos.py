"""Photos: upload many at once, watch each become variants on a CPU worker, browse the gallery.

The web process never decodes pixels: it checks the size and the first bytes of each
upload, streams it to storage and queues one job per photo.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

from webapp import queueing, storage
from webapp.access import visible
from webapp.extensions import db
from webapp.image_types import ACCEPT_ATTRIBUTE, ACCEPTED, ImageRejected, sniff_image_type
from webapp.kinds import INTERACTIVE_PHOTOS_PER_UPLOAD, queue_for
from webapp.models import Job, JobStatus, Photo, StoredFile
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
                           max_files=current_app.config["PHOTO_MAX_FILES"], accepted_types=ACCEPTED,
                           accept_attribute=ACCEPT_ATTRIBUTE)


@bp.post("/")
@login_required
def upload():
    """Store each acceptable photo and queue its resize; explain each rejected one.

    The upload page's script sends one file per request with ``Accept: application/json`` (for a
    progress bar per file) and gets each file's outcome as JSON; without it, a redirect and messages.
    """
    as_json = request.accept_mimetypes.best == "application/json"
    files = [f for f in request.files.getlist("photos") if f and f.filename]
    if not files or len(files) > current_app.config["PHOTO_MAX_FILES"]:
        message = ("Choose one or more photos to upload." if not files
                   else f"Upload at most {current_app.config['PHOTO_MAX_FILES']} photos at once.")
        if as_json:
            return jsonify({"error": message}), 400
        flash(message, "error")
        return redirect(url_for("photos.index"), code=303)
    # The page sends one file per request with its place in the upload; a form post sends them all.
    first = request.form.get("position", type=int) or 0
    # Whatever a client says, an account with many photos already waiting as interactive work
    # gets bulk work: nobody can fill the interactive queue with photos one request at a time.
    flooding = _interactive_photos_waiting() >= 2 * INTERACTIVE_PHOTOS_PER_UPLOAD
    outcomes = [_accept(upload_file, INTERACTIVE_PHOTOS_PER_UPLOAD if flooding else max(0, first) + i)
                for i, upload_file in enumerate(files)]
    if as_json:
        return jsonify({"files": outcomes})
    for outcome in outcomes:
        if outcome["error"]:
            flash(f"{outcome['name']}: {outcome['error']}", "error")
    accepted = sum(1 for outcome in outcomes if not outcome["error"])
    if accepted:
        flash(f"{accepted} photo{'s' if accepted != 1 else ''} uploaded; resizing in the background.", "success")
    return redirect(url_for("photos.index"), code=303)


def _interactive_photos_waiting() -> int:
    """How many of this account's photos wait or run as interactive work right now (counted up to twice the cap)."""
    return db.session.scalar(
        select(func.count()).select_from(
            select(Job.id).where(Job.owner_id == current_user.id, Job.kind == "resize_photo",
                                 Job.queue == queue_for("resize_photo"),
                                 Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
            .limit(2 * INTERACTIVE_PHOTOS_PER_UPLOAD).subquery())
    ) or 0


def _accept(upload_file: FileStorage, position: int) -> dict:
    """Store one upload and queue its resize; its name, and the photo id or the reason it was refused.

    ``position`` is the photo's place in its upload: the first few are interactive work, the
    rest of a big upload is bulk (webapp/kinds.py queue_for).
    """
    name = storage.safe_filename(upload_file.filename or "photo")
    try:
        image_type = check_upload(upload_file)
    except ImageRejected as exc:
        return {"name": name, "error": str(exc), "photo_id": None}
    original = storage.store_stream(current_user.id, upload_file.stream, name, f"image/{image_type}")
    photo = Photo(owner_id=current_user.id, original_id=original.id, filename=name, bytes=original.size,
                  format=image_type)
    db.session.add(photo)
    db.session.commit()
    job = queueing.submit("resize_photo", current_user.id, {"photo_id": str(photo.id)}, name,
                          queue=queue_for("resize_photo", position_in_upload=position))
    photo.job_id = job.id
    db.session.commit()
    return {"name": name, "error": None, "photo_id": str(photo.id)}


# What "Download all" offers (jobs/zip_photos.py): the button's value names the variant.
ZIP_TITLES = {"large": "All photos (large JPEGs)", "original": "All photos (originals)"}


@bp.post("/download-all")
@login_required
def download_all():
    """Queue a ZIP of all the current user's finished photos and go to its job page."""
    variant = request.form.get("variant", "large")
    if variant not in ZIP_TITLES:
        abort(400, "Choose large JPEGs or originals.")
    job = queueing.submit("zip_photos", current_user.id, {"variant": variant}, ZIP_TITLES[variant])
    return redirect(url_for("jobs.show", job_id=job.id), code=303)


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
