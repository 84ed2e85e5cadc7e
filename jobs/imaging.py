"""Turn one uploaded photo into web-sized JPEG and WebP variants, in bounded time and memory.

The pure core of the Photos feature: no Flask, no database. The web process only
sniffs the first bytes of an upload (``sniff_image_type``, which lives in
``webapp.image_types`` so the web never imports worker code); a worker calls
``make_variants`` on the stored file. What real photos need, and this does:

- the dimensions are read from the header and checked before a pixel is decoded;
- JPEGs are decoded at reduced scale (``draft``) and other formats reduced by an
  integer factor straight after decoding, so at most one full-size copy of the
  pixels ever exists; the largest variant is made first, each smaller one from it;
- EXIF orientation is applied, colour profiles are converted to sRGB, and no
  metadata (EXIF, GPS, XMP, profile) is written to any variant;
- CMYK, Lab, 16- and 32-bit, palette, grey and transparent images come out right
  (alpha kept in WebP, flattened on white in JPEG); animations give their first frame;
- HEIC (iPhones, through pillow-heif), AVIF (Pillow's own plugin) and BigTIFF are read;
  a file that is damaged is told apart from one saved with options Pillow cannot read;
- each file is written under a temporary name and renamed when complete, and a
  failure removes every file this call created.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import struct
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import cast

from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError
from pillow_heif import register_heif_opener

from webapp.image_types import EXPORT_HINT, ImageRejected, sniff_image_type

__all__ = ["ImageRejected", "make_variants", "sniff_image_type"]

log = logging.getLogger(__name__)

# HEIC decoding comes from pillow-heif; thumbnails stay off so the main picture is what is read.
register_heif_opener(thumbnails=False)

# The Pillow plugins allowed to parse each sniffed type: nothing else (EPS, PSD, ...) ever runs.
# (JPEG's opener also returns multi-picture MPO files; "MPO" has no opener of its own.)
PILLOW_FORMATS = {"jpeg": ["JPEG"], "png": ["PNG"], "gif": ["GIF"], "webp": ["WEBP"],
                  "tiff": ["TIFF"], "bmp": ["BMP"],
                  "heic": ["HEIF", "AVIF"], "avif": ["AVIF", "HEIF"]}
TYPE_NAMES = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WebP", "tiff": "TIFF", "bmp": "BMP",
              "heic": "HEIC", "avif": "AVIF"}
FILE_TYPES = (("jpeg", "jpg"), ("webp", "webp"))
JPEG_QUALITY = 85
# WebP encoding is most of the time budget (48 MP photo -> 3 sizes x 2 formats in < 0.6 s). Measured on
# the benchmark photo's 1600x1200 variant: libwebp's default method 4 takes 0.22 s, method 2 0.11 s for
# a file 5 % larger; methods 0-1 save another 0.03-0.05 s but grow files 7-8 %; 3-6 cost 2-4x for
# at most 6 % less. Quality 80 gives files about 2/3 the size of the JPEG 85 ones (230 vs 338 KB).
WEBP_QUALITY = 80
WEBP_METHOD = 2
# libwebp and libjpeg release the GIL (measured): one size encodes while the next is resized.
SAVE_THREADS = 2
ORIENTATION = 0x0112
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
SRGB = ImageCms.createProfile("sRGB")
LAB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
# What Pillow raises on malformed files, beyond OSError ("image file is truncated", "broken data stream").
CORRUPT = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, ZeroDivisionError,
           TypeError, AttributeError, NotImplementedError)
# Words in Pillow's messages that mean "the data stops or is broken", as opposed to "a feature it lacks".
DAMAGED_WORDS = ("truncat", "broken data", "premature end", "incomplete", "not enough data", "end of file",
                 "ran out of data", "corrupt", "checksum", "crc", "bad huffman", "invalid")
# ... and words that mean the file is fine but uses something Pillow cannot decode.
UNSUPPORTED_WORDS = ("not available", "unsupported", "not supported", "unknown", "cannot handle",
                     "not implemented", "no decoder", "mode not")
TIFF_BITS_PER_SAMPLE, TIFF_SAMPLE_FORMAT = 258, 339


def make_variants(src_path: str | Path, out_dir: str | Path, sizes: dict[str, int], *,
                  max_pixels: int = 100_000_000,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``<name>.jpg`` and ``<name>.webp`` for each named longest edge; return what was made."""
    started = time.perf_counter()
    src, out = Path(src_path), Path(out_dir)
    ordered = _checked_sizes(sizes)
    total = len(ordered) * len(FILE_TYPES)
    created: list[Path] = []  # save threads append each file once it is in place
    try:
        image, original = _decode(src, ordered[0][1], max_pixels)
        upright = (original["width"], original["height"])
        pending: list[tuple[str, tuple[int, int], Future[list[tuple[str, Path, int]]]]] = []
        with ThreadPoolExecutor(SAVE_THREADS, thread_name_prefix="imaging-save") as pool:
            try:
                current = image  # already the size of the largest variant
                del image
                for name, longest in ordered:
                    current = _resized(current, _fit(upright, longest))
                    pending.append((name, current.size, pool.submit(_write_size, current, out, name, created)))
                del current
                variants = []
                for name, (width, height), job in pending:
                    for fmt, path, size in job.result():
                        variants.append({"name": name, "format": fmt, "width": width, "height": height,
                                         "path": str(path), "bytes": size})
                        if progress is not None:
                            progress(len(variants), total)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # let a running save finish before cleaning up
                raise
    except BaseException as exc:
        for path in created:
            path.unlink(missing_ok=True)
        if isinstance(exc, MemoryError):
            raise ImageRejected("image too large to process") from exc
        raise
    log.info("made %d variants of a %dx%d %s in %.2f s", len(variants), *upright, original["format"],
             time.perf_counter() - started)
    return {"original": original, "variants": variants}


def _checked_sizes(sizes: dict[str, int]) -> list[tuple[str, int]]:
    """The requested sizes, largest first; a programming error (not the user's) raises ValueError."""
    if not sizes:
        raise ValueError("no variant sizes given")
    for name, longest in sizes.items():
        if not VARIANT_NAME.fullmatch(name) or not isinstance(longest, int) or longest < 1:
            raise ValueError(f"bad variant size {name!r}: {longest!r}")
    return sorted(sizes.items(), key=lambda item: item[1], reverse=True)


def _decode(src: Path, largest: int, max_pixels: int) -> tuple[Image.Image, dict]:
    """Check the file, then decode its first frame, upright, in sRGB, at the largest variant's size."""
    size = src.stat().st_size
    if size == 0:
        raise ImageRejected("empty file")
    with src.open("rb") as head:
        kind = sniff_image_type(head.read(64))
    try:
        with _pillow_limits(None), Image.open(src, formats=PILLOW_FORMATS[kind]) as opened:
            # Header only so far: refuse giants before their pixels are allocated.
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageRejected(f"image too large to process ({width}x{height} pixels, "
                                    f"limit {max_pixels / 1_000_000:g} MP)")
            original = {"width": width, "height": height, "format": kind, "mode": opened.mode, "bytes": size}
            icc = opened.info.get("icc_profile")
            target = _fit((width, height), largest)
            with _pillow_limits(max_pixels):
                if opened.format in ("JPEG", "MPO") and opened.size != target:
                    # libjpeg scales by 1/2, 1/4 or 1/8 while decoding: the smallest still covering the target.
                    opened.draft(None, target)
                opened.load()
                orientation = _orientation(opened)
                image = _expanded(opened, _bits_per_sample(opened))
                if image is not opened:
                    opened.close()  # release the full-size decode before allocating anything else
                elif image.mode == "LAB":
                    # Pillow cannot average Lab (a and b are signed): to sRGB through a profile first.
                    image, icc = _to_srgb(image, LAB_PROFILE), None
                image = _resized(_shrunk(image, largest), target)
                if image is opened:
                    image = opened.copy()  # already variant-sized: a small copy outlives the file
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image too large to process (limit {max_pixels / 1_000_000:g} MP)") from exc
    except (UnidentifiedImageError, *CORRUPT) as exc:
        raise _unreadable(kind, exc) from exc
    # Colour conversion on the variant-sized image, not the (bigger) decoded one.
    image = _to_srgb(image, icc)
    image.info.clear()  # EXIF, GPS, XMP, comments: none of it may reach a variant
    if orientation in TRANSPOSE:
        image = image.transpose(TRANSPOSE[orientation])
        if orientation >= 5:  # 5-8 swap width and height
            original["width"], original["height"] = height, width
    return image, original


@contextlib.contextmanager
def _pillow_limits(max_pixels: int | None) -> Iterator[None]:
    """Set Pillow's bomb limit (its warning made an error) and refuse truncated data, for this block."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd metadata in files it still reads ("Corrupt EXIF data"): not our business.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8); a damaged EXIF block counts as 'upright', not as a broken photo."""
    try:
        value = image.getexif().get(ORIENTATION, 1)
    except CORRUPT:
        log.info("unreadable EXIF ignored")
        return 1
    return value if isinstance(value, int) else 1


def _unreadable(kind: str, exc: BaseException) -> ImageRejected:
    """The refusal for a file Pillow failed on: damaged data, or a valid file using what Pillow lacks."""
    name, text = TYPE_NAMES.get(kind, kind.upper()), str(exc).lower()
    if not isinstance(exc, UnidentifiedImageError) and (
            isinstance(exc, EOFError) or any(word in text for word in DAMAGED_WORDS)):
        log.warning("rejected %s as corrupt: %r", kind, exc)
        return ImageRejected("truncated or corrupt image")
    log.warning("rejected %s as unreadable: %r", kind, exc)
    if any(word in text for word in UNSUPPORTED_WORDS):
        return ImageRejected(f"this {name} file uses a compression or colour format we cannot read — {EXPORT_HINT}")
    return ImageRejected(f"this {name} file could not be read: it may be damaged, or saved with options "
                         f"we cannot read — {EXPORT_HINT}")


def _bits_per_sample(image: Image.Image) -> int | None:
    """Bits per grey sample a TIFF declares (16, 32, ...); None when the file does not say."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(TIFF_BITS_PER_SAMPLE)
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    return bits if isinstance(bits, int) and bits > 8 else None


def _expanded(image: Image.Image, bits: int | None = None) -> Image.Image:
    """Full-size conversions that must come before pixels are averaged: palette, deep grey, bilevel, alpha."""
    mode = image.mode
    if mode in ("P", "PA"):
        return image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    if mode == "1":
        return image.convert("L")
    if mode == "I" or mode.startswith(("I;16", "I;32")):
        return _grey_to_8_bit(image, bits)
    if mode == "F":
        return _float_to_8_bit(image)
    if mode == "LA" or (mode in ("L", "RGB") and "transparency" in image.info):
        return image.convert("RGBA")  # Pillow premultiplies RGBA when it reduces and resizes: no dark fringes
    return image


def _grey_to_8_bit(image: Image.Image, bits: int | None) -> Image.Image:
    """16- or 32-bit grey scaled to 8 bits by its declared depth (Pillow's convert("L") clips at 255)."""
    signed = getattr(image, "tag_v2", {}).get(TIFF_SAMPLE_FORMAT) in (2, (2,))
    # Pillow's "I" is 32-bit signed: I;16 of every byte order widens to it exactly.
    wide = image if image.mode == "I" else image.convert("I")
    if bits is None or bits > 16:
        # 32-bit containers mostly hold 16-bit data (scientific cameras, PGM conversions): judge by the values.
        _low, high = cast(tuple[float, float], wide.getextrema())
        bits = 16 if image.mode.startswith("I;16") or high <= 0xFFFF else (bits or 32)
    # Signed samples keep their sign bit unused in practice: 0 stays black, the largest positive is white.
    scale = 1 / 2 ** (bits - (9 if signed and bits > 16 else 8))
    # point() on "I" is one linear map computed in floating point: scaled once, then clipped into 0-255.
    return wide.point(lambda value: value * scale).convert("L")


def _float_to_8_bit(image: Image.Image) -> Image.Image:
    """32-bit float grey to 8 bits: 0-1 data as is, anything else stretched from its darkest to lightest."""
    low, high = cast(tuple[float, float], image.getextrema())
    if low >= 0 and high <= 1:
        return image.point(lambda value: value * 255).convert("L")
    span = (high - low) or 1
    return image.point(lambda value: (value - low) * 255 / span).convert("L")


def _shrunk(image: Image.Image, largest: int) -> Image.Image:
    """Cheap box reduction by a whole factor, leaving at least twice the largest variant for LANCZOS."""
    factor = max(image.size) // (2 * largest)
    if factor >= 2:
        image = image.reduce(factor)
    if image.mode not in ("RGB", "RGBA", "L", "CMYK"):
        return image.convert("RGB")  # YCbCr, RGBX, HSV, ...
    return image


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Pixels in sRGB through the embedded profile, if usable; CMYK always as RGB, opaque RGBA as RGB."""
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            # Most camera and phone JPEGs embed sRGB itself: converting it to sRGB would cost ~40 ms for nothing.
            if not ImageCms.getProfileDescription(profile).strip().startswith("sRGB"):
                out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
                image = ImageCms.profileToProfile(image, profile, SRGB, outputMode=out_mode) or image
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            log.info("colour profile ignored: %s", exc)
    if image.mode == "RGBA" and cast(tuple[tuple[int, int], ...], image.getextrema())[3] == (255, 255):
        return image.convert("RGB")  # an alpha channel with nothing transparent in it
    return image.convert("RGB") if image.mode == "CMYK" else image


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` scaled so its longest edge is at most ``longest`` (never enlarged)."""
    width, height = size
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """``image`` at ``target`` size (LANCZOS), or itself if it is that size already."""
    if image.size == target:
        return image
    return image.resize(target, Image.Resampling.LANCZOS)


def _write_size(image: Image.Image, out: Path, name: str, created: list[Path]) -> list[tuple[str, Path, int]]:
    """Write one size in every file type, one after the other: an Image must not be saved by two threads."""
    return [(fmt, *_write(image, out / f"{name}.{suffix}", fmt, created)) for fmt, suffix in FILE_TYPES]


def _write(image: Image.Image, path: Path, fmt: str, created: list[Path]) -> tuple[Path, int]:
    """Encode ``image`` to a temporary file beside ``path``, rename it into place; return path and bytes."""
    if fmt == "jpeg":
        encoded, options = _on_white(image), {"quality": JPEG_QUALITY, "optimize": True}
    else:
        encoded, options = image, {"quality": WEBP_QUALITY, "method": WEBP_METHOD}
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            encoded.save(file, fmt.upper(), **options)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    created.append(path)
    return path, path.stat().st_size


def _on_white(image: Image.Image) -> Image.Image:
    """``image`` for JPEG, which has no transparency: translucent pixels over white."""
    if image.mode != "RGBA":
        return image
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=image.getchannel("A"))
    return flat
