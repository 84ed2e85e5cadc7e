"""Recognise an image upload from its first bytes, without decoding it.

The web process calls this on every upload; workers use ImageRejected for the
same user-facing failures found while decoding. A file in a format we do not
resize is refused by naming that format and saying what to do instead.
"""

from __future__ import annotations


class ImageRejected(Exception):
    """A photo that cannot be used; ``str(exc)`` is the short reason shown to the user."""


# What phones and cameras give us, and what we resize: the ``accept`` list of the upload form.
ACCEPTED = "JPEG, PNG, HEIC, AVIF, WebP, GIF, TIFF or BMP"
ACCEPT_ATTRIBUTE = "image/*,.heic,.heif,.avif,.tif,.tiff"
EXPORT_HINT = "export as JPEG or PNG"

# (offset, magic) -> image type
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"II+\x00", "tiff"),  # BigTIFF (64-bit offsets), from scanners and microscopes
    (0, b"MM\x00+", "tiff"),
    (0, b"BM", "bmp"),
)
AVIF_BRANDS = {b"avif", b"avis"}
HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
# Image formats we recognise but do not resize: named, so the person knows what to change.
UNSUPPORTED: tuple[tuple[bytes, str], ...] = (
    (b"8BPS", "PSD"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x01\x00", "ICO (icon)"),
    (b"\x00\x00\x02\x00", "CUR (cursor)"),
    (b"icns", "ICNS (icon)"),
    (b"DDS ", "DDS (texture)"),
    (b"qoif", "QOI"),
    (b"SIMPLE  =", "FITS"),
    (b"\x01\xda", "SGI"),
    (b"gimp xcf", "XCF (GIMP)"),
    (b"BLP1", "BLP (texture)"),
    (b"BLP2", "BLP (texture)"),
    (b"\xd7\xcd\xc6\x9a", "WMF"),
    (b"/* XPM */", "XPM"),
    (b"\x59\xa6\x6a\x95", "Sun Raster"),
    (b"DanM", "MSP (Microsoft Paint)"),
    (b"LinS", "MSP (Microsoft Paint)"),
    (b"Image type:", "IM"),
    (b"FUJIFILMCCD-RAW", "Fujifilm RAF (camera raw)"),
)
NETPBM = {b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7", b"Pf", b"PF"}
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


def not_supported(name: str) -> ImageRejected:
    """The refusal for an image format we recognise but do not resize."""
    return ImageRejected(f"{name} files are not supported — {EXPORT_HINT}")


def sniff_image_type(head: bytes) -> str:
    """The image type of a file starting with ``head`` (>= 16 bytes), or ImageRejected with the reason."""
    if not head:
        raise ImageRejected("empty file")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _iso_media_type(head)
    for offset, magic, kind in SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return kind
    for magic, name in UNSUPPORTED:
        if head.startswith(magic):
            raise not_supported(name)
    if head[:2] in NETPBM and head[2:3].isspace():
        raise not_supported("PPM/PGM (Netpbm)")
    if head[4:6] in (b"\x11\xaf", b"\x12\xaf"):
        raise not_supported("FLI/FLC (animation)")
    if head[0] == 0x0A and head[1] in (0, 2, 3, 4, 5) and head[2] == 1:
        raise not_supported("PCX")
    stripped = head.lstrip()
    for magic, what in NOT_IMAGES:
        if stripped[: len(magic)].lower() == magic.lower():
            raise ImageRejected(f"not an image (looks like {what})")
    raise ImageRejected(f"not an image, or a kind of image we do not know (we take {ACCEPTED})")


def _iso_media_type(head: bytes) -> str:
    """HEIC or AVIF from an ISO media file's brands (major, then compatible); videos are refused."""
    size = int.from_bytes(head[:4], "big")
    brands = [head[8:12]] + [head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
    if any(brand in AVIF_BRANDS for brand in brands):
        return "avif"
    if any(brand in HEIC_BRANDS for brand in brands):
        return "heic"
    if head[8:12] == b"crx ":
        raise not_supported("Canon CR3 (camera raw)")
    raise ImageRejected("not an image (looks like a video or MP4 file)")
