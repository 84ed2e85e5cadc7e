"""Recognise an image upload from its first bytes, without decoding it.

The web process calls this on every upload; workers use ImageRejected for the
same user-facing failures found while decoding.
"""

from __future__ import annotations


class ImageRejected(Exception):
    """A photo that cannot be used; ``str(exc)`` is the short reason shown to the user."""


# (offset, magic) -> image type
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"BM", "bmp"),
)
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
NOT_IMAGES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF"),
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a program"),
    (b"PK\x03\x04", "a ZIP archive or office document"),
    (b"<svg", "an SVG drawing (not supported)"),
    (b"<?xml", "an XML document"),
    (b"<!DOCTYPE", "an HTML page"),
    (b"<html", "an HTML page"),
)


def sniff_image_type(head: bytes) -> str:
    """The image type of a file starting with ``head`` (>= 16 bytes), or ImageRejected with the reason."""
    if not head:
        raise ImageRejected("empty file")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in HEIF_BRANDS:
            kind = "AVIF" if brand.startswith(b"avi") else "HEIC"
            raise ImageRejected(f"{kind} photos are not supported; export the photo as JPEG and upload that")
        raise ImageRejected("not an image (looks like a video or MP4 file)")
    for offset, magic, kind in SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return kind
    stripped = head.lstrip()
    for magic, what in NOT_IMAGES:
        if stripped[: len(magic)].lower() == magic.lower():
            raise ImageRejected(f"not an image (looks like {what})")
    raise ImageRejected("not an image (unrecognised file type)")
