"""Put all of an owner's finished photos into one ZIP to download ("Download all" in the gallery).

Each photo's file is streamed from storage into the ZIP in the job's scratch folder, one
member at a time, so memory use does not grow with the number or size of photos. JPEG,
WebP, PNG and HEIC are already compressed: members are stored, not deflated, which keeps
the job fast and the ZIP no larger. The ZIP is stored last, with the job's success.
"""

from __future__ import annotations

import logging
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from jobs.errors import JobFailed
from jobs.runtime import JobContext, job_entry
from webapp import storage
from webapp.extensions import db
from webapp.models import Photo, StoredFile

log = logging.getLogger(__name__)

VARIANTS = ("large", "original")
DEFAULT_VARIANT = "large"  # what a shop owner wants for a web shop or a marketplace: light, full-sized JPEGs
ZIP_NAMES = {"large": "photos-large.zip", "original": "photos-originals.zip"}
DESCRIPTIONS = {"large": "large JPEGs", "original": "originals"}
ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)  # ZIP timestamps cannot go earlier


@dataclass(frozen=True)
class Member:
    """One photo's file (where its bytes are) and the name it gets inside the ZIP.

    Plain values, not a row: each progress report commits, which would expire a row.
    """

    name: str
    modified: datetime
    backend: str
    key: str
    size: int


def variant_of(params: dict) -> str:
    """The variant asked for; JobFailed for anything else (a hand-made request)."""
    variant = params.get("variant") or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise JobFailed(f"Choose large JPEGs or originals, not {str(variant)[:40]!r}.")
    return variant


def _large_jpeg(variants: dict) -> str | None:
    """The file id of the "large" JPEG, or of the widest JPEG when sizes are configured without "large"."""
    chosen = variants.get("large")
    if not chosen:
        sized = [v for v in variants.values() if v.get("files", {}).get("jpeg")]
        chosen = max(sized, key=lambda v: v.get("width") or 0, default=None)
    return (chosen or {}).get("files", {}).get("jpeg")


def _source(photo: Photo, variant: str) -> tuple[uuid.UUID, str] | None:
    """The file to put in the ZIP for ``photo`` and its wanted name; None when the photo is not finished."""
    if not photo.variants:
        return None  # still processing, or failed: its variants do not exist
    if variant == "original":
        return (photo.original_id, photo.filename) if photo.original_id else None
    file_id = _large_jpeg(photo.variants)
    if not file_id:
        return None
    return uuid.UUID(file_id), photo.filename.rsplit(".", 1)[0] + ".jpg"


def unique_name(wanted: str, taken: set[str]) -> str:
    """A safe member name not yet in ``taken`` (compared ignoring case, as Windows and macOS do): "a (2).jpg"."""
    name = storage.safe_filename(wanted)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    candidate, number = name, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{stem} ({number}){dot}{ext}"
    taken.add(candidate.casefold())
    return candidate


def collect_members(owner_id: int, variant: str) -> tuple[list[Member], int]:
    """The owner's finished photos as ZIP members (oldest first), and how many photos were left out."""
    photos = db.session.scalars(
        select(Photo).where(Photo.owner_id == owner_id).order_by(Photo.created_at, Photo.id)
    ).all()
    sources = [(photo, _source(photo, variant)) for photo in photos]
    wanted_ids = [source[0] for _photo, source in sources if source]
    # Only files that exist and belong to the owner: a photo deleted meanwhile is simply left out.
    files = {row.id: row for row in db.session.scalars(
        select(StoredFile).where(StoredFile.id.in_(wanted_ids), StoredFile.owner_id == owner_id)
    )} if wanted_ids else {}
    members: list[Member] = []
    taken: set[str] = set()
    for photo, source in sources:
        stored = files.get(source[0]) if source else None
        if source and stored is not None:
            members.append(Member(unique_name(source[1], taken), photo.created_at, stored.backend, stored.key,
                                  stored.size))
    db.session.commit()  # no transaction left idle while the files stream
    return members, len(photos) - len(members)


def _add_member(archive: zipfile.ZipFile, member: Member, ctx: JobContext) -> None:
    """Stream one stored file into the archive, chunk by chunk, checking for cancel as it goes."""
    info = zipfile.ZipInfo(member.name, date_time=max(member.modified, ZIP_EPOCH).utctimetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = member.size  # known up front, so a member over 2 GB gets ZIP64 headers
    with archive.open(info, "w") as out:
        for chunk in storage.backend(member.backend).iter_chunks(member.key):
            out.write(chunk)
            ctx.check_cancelled()


@job_entry
def zip_photos(ctx: JobContext) -> dict:
    """Write the owner's finished photos (ctx.params["variant"]: "large" or "original") into a ZIP and store it."""
    variant = variant_of(ctx.params)
    members, left_out = collect_members(ctx.owner_id, variant)
    if not members:
        raise JobFailed("There are no finished photos to download yet. Upload photos and wait until "
                        "they are ready, then try again.")
    total = len(members)
    ctx.progress(0, total, f"Adding {total:,} photos", force=True)
    path = ctx.scratch / "photos.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for done, member in enumerate(members, start=1):
            _add_member(archive, member, ctx)
            ctx.progress(done, total, "Saving the ZIP" if done == total else "Adding photos")
    stored = storage.store_path(ctx.owner_id, path, ZIP_NAMES[variant], "application/zip", job_id=ctx.job_id)
    # Not committed here: the runtime commits it together with the job's success.
    summary = f"{total:,} photo{'s' if total != 1 else ''} ({DESCRIPTIONS[variant]})"
    if left_out:
        summary += f"; {left_out:,} not finished yet, left out"
    return {"file_id": str(stored.id), "photos": total, "bytes": stored.size, "summary": summary}
