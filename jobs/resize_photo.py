"""Resize one uploaded photo into its variants (each size in JPEG and WebP).

The original is copied from storage to the job's scratch folder and decoded
there, at reduced scale where the format allows; the variants are stored only
when all of them exist, in the same transaction as the job's success. A photo that
cannot be processed fails with a short reason; its original stays until its owner
deletes the photo.
"""

from __future__ import annotations

import logging
import uuid

from flask import current_app

from jobs.errors import JobFailed
from jobs.imaging import make_variants
from jobs.runtime import JobContext, job_entry
from webapp import storage
from webapp.extensions import db
from webapp.image_types import ImageRejected
from webapp.models import Photo, StoredFile

log = logging.getLogger(__name__)

CONTENT_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp", "png": "image/png"}


@job_entry
def resize_photo(ctx: JobContext) -> dict:
    """Make the configured variants of the photo in ctx.params["photo_id"]."""
    photo = db.session.get(Photo, uuid.UUID(ctx.params["photo_id"]))
    if photo is None:
        raise JobFailed("The photo was deleted before it could be processed.")
    original = db.session.get(StoredFile, photo.original_id) if photo.original_id else None
    if original is None:
        raise JobFailed("The uploaded file is missing.")
    ctx.progress(0, None, "Reading the upload", force=True)
    source = storage.copy_to_path(original, ctx.scratch / "original")
    out_dir = ctx.scratch / "variants"
    out_dir.mkdir()
    try:
        made = make_variants(
            source, out_dir, current_app.config["PHOTO_SIZES"],
            max_pixels=current_app.config["PHOTO_MAX_PIXELS"],
            progress=lambda done, total: ctx.progress(done, total, "Making variants"),
        )
    except ImageRejected as exc:
        # The original stays until its owner deletes the photo: Retry then gives the same
        # reason, and nothing is lost if the refusal was ours to fix.
        raise JobFailed(str(exc)) from exc
    variants: dict[str, dict] = {}
    for variant in made["variants"]:
        fmt = variant["format"].lower()
        stem = photo.filename.rsplit(".", 1)[0]
        stored = storage.store_path(
            ctx.owner_id, variant["path"], f"{stem}-{variant['name']}.{'jpg' if fmt == 'jpeg' else fmt}",
            CONTENT_TYPES.get(fmt, "application/octet-stream"), job_id=ctx.job_id,
        )
        entry = variants.setdefault(variant["name"], {"width": variant["width"], "height": variant["height"],
                                                      "files": {}})
        entry["files"][fmt] = str(stored.id)
    info = made["original"]
    photo.width, photo.height = info["width"], info["height"]
    photo.format = str(info["format"]).lower()
    photo.variants = variants
    # Not committed here: the runtime commits the variants together with the job's success.
    return {
        "photo_id": str(photo.id),
        "variants": len(made["variants"]),
        "summary": f"{len(variants)} sizes × {len(made['variants']) // max(1, len(variants))} formats from "
                   f"{info['width']}×{info['height']} {photo.format.upper()}",
    }
