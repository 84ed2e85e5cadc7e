"""Turning one uploaded photo into web variants, in bounded memory.

What real photos need and this module does:
- dimensions are checked from the header before any pixel is decoded (bombs, giants);
- JPEGs are decoded at reduced scale (``draft``) to the smallest size that still
  covers the largest variant, so a 48 MP photo never exists in memory at full size;
- the largest variant is made first and each smaller one from the one before it;
- EXIF orientation is applied, colour profiles are converted to sRGB, and no
  metadata (EXIF, GPS, XMP) is written to any variant;
- CMYK, 16-bit, palette, grey and transparent images all come out right
  (transparency kept in WebP, flattened on white for JPEG); animations give
  their first frame;
- every file is written under a temporary name and renamed when complete, and a
  failure removes whatever this call wrote.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from webapp.image_types import ImageRejected

log = logging.getLogger(__name__)

# Never accept a half-decoded image as if it were whole.
ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp", "MPO": "jpeg"}
JPEG_QUALITY = 85
# WebP "method" trades encoder effort for size: measured on a 1600x1200 variant, method 4
# (libwebp's default) took 0.28 s, method 2 0.06 s for files a few percent larger. The
# whole variant set must fit in well under a second, so 2.
WEBP_QUALITY = 80
WEBP_METHOD = 2
ORIENTATION_TAG = 0x0112
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SRGB = ImageCms.createProfile("sRGB")


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` scaled so its longest edge is at most ``longest`` (never enlarged)."""
    width, height = size
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to 8-bit RGB/RGBA/L in sRGB, honouring an embedded colour profile."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greys: scale to 8 bits.
        image = image.convert("I") if mode != "I" else image
        image = image.point(lambda v: v * (1 / 256)).convert("L")
        mode = "L"
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
    elif mode == "LA":
        image = image.convert("RGBA")
    elif mode in ("1",):
        image = image.convert("L")
    elif mode in ("YCbCr", "RGBX", "HSV"):
        image = image.convert("RGB")
    if image.mode == "LAB" and not icc:
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    if icc and image.mode in ("RGB", "RGBA", "CMYK", "L", "LAB"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            alpha = image.getchannel("A") if image.mode == "RGBA" else None
            base = image.convert("RGB") if image.mode == "RGBA" else image
            out_mode = "L" if base.mode == "L" else "RGB"
            converted = ImageCms.profileToProfile(base, source, SRGB, outputMode=out_mode)
            if alpha is not None:
                converted.putalpha(alpha)
            return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            log.info("unusable ICC profile ignored")
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return image


def _jpeg_ready(image: Image.Image) -> Image.Image:
    """JPEG has no transparency: flatten on white."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def _save(image: Image.Image, path: Path, fmt: str) -> int:
    """Write ``image`` to ``path`` atomically, with no metadata; returns the size in bytes."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-", suffix=path.suffix)
    os.close(fd)
    try:
        if fmt == "jpeg":
            _jpeg_ready(image).save(tmp, "JPEG", quality=JPEG_QUALITY)
        else:
            image.save(tmp, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _decode(src: Path, largest: int, max_pixels: int) -> tuple[Image.Image, dict]:
    """Open, check and decode the first frame, as small as the largest variant allows."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    if src.stat().st_size == 0:
        raise ImageRejected("empty file")
    with Image.open(src) as opened:
        fmt = SUPPORTED.get(opened.format or "")
        if fmt is None:
            raise ImageRejected(f"not a supported image ({opened.format or 'unknown'} format)")
        width, height = opened.size
        if width * height > max_pixels:
            raise ImageRejected(
                f"image too large to process ({width}x{height} pixels, limit {max_pixels / 1_000_000:.0f} MP)")
        info = {"width": width, "height": height, "format": fmt, "mode": opened.mode, "bytes": src.stat().st_size}
        orientation = opened.getexif().get(ORIENTATION_TAG, 1)
        icc = opened.info.get("icc_profile")
        if getattr(opened, "n_frames", 1) > 1:
            opened.seek(0)
        if opened.format in ("JPEG", "MPO"):
            # draft() picks the smallest DCT scale that is still at least this size.
            opened.draft(opened.mode, _fit((width, height), largest) if max(width, height) > largest else (width, height))
        opened.load()
        image = opened
        # Reduce cheaply by an integer factor before any colour conversion copies the pixels.
        factor = max(1, int(max(image.size) / largest / 2))
        if factor >= 2 and image.mode in ("RGB", "RGBA", "L", "LA", "CMYK", "I", "F"):
            image = image.reduce(factor)
        image = _to_srgb(image, icc)
        if image is opened:
            image = opened.copy()
    transpose = TRANSPOSE.get(orientation)
    if transpose is not None:
        image = image.transpose(transpose)
        if transpose in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                         Image.Transpose.ROTATE_270):
            info["width"], info["height"] = info["height"], info["width"]
    return image, info


def make_variants(src_path: str | Path, out_dir: str | Path, sizes: dict[str, int], *,
                  max_pixels: int = 100_000_000, progress: Callable[[int, int], None] | None = None) -> dict:
    """Make a JPEG and a WebP of each named size (longest edge) in ``out_dir``; see the module docstring."""
    src, out = Path(src_path), Path(out_dir)
    ordered = sorted(sizes.items(), key=lambda item: item[1], reverse=True)
    total = 2 * len(ordered)
    written: list[Path] = []
    try:
        image, info = _decode(src, ordered[0][1], max_pixels)
        variants = []
        current = image
        for name, longest in ordered:
            target = _fit((info["width"], info["height"]), longest)
            if current.size != target:
                current = current.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
            for fmt, suffix in (("jpeg", "jpg"), ("webp", "webp")):
                path = out / f"{name}.{suffix}"
                size = _save(current, path, fmt)
                written.append(path)
                variants.append({"name": name, "format": fmt, "width": current.width, "height": current.height,
                                 "path": str(path), "bytes": size})
                if progress is not None:
                    progress(len(written), total)
        return {"original": info, "variants": variants}
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, ImageRejected):
            raise
        if isinstance(exc, Image.DecompressionBombError):
            raise ImageRejected("image too large to process (it declares more pixels than allowed)") from exc
        if isinstance(exc, UnidentifiedImageError):
            raise ImageRejected("not an image (the file could not be read as a picture)") from exc
        if isinstance(exc, MemoryError):
            raise ImageRejected("image too large to process within the memory limit") from exc
        if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
            raise ImageRejected(f"truncated or corrupt image ({exc})"[:200]) from exc
        raise
