"""What real photos do to a resizer: each case comes out right, or is refused with a reason and leaves nothing.

Every image is made here with Pillow (EXIF, GPS, XMP, colour profiles, CMYK, 16-bit,
palettes, alpha, animation, bombs, truncation); nothing is mocked. No database or
Redis is needed.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from jobs.imaging import ImageRejected, make_variants, sniff_image_type

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"thumb": 64, "large": 256}
RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)


# -- helpers -------------------------------------------------------------------------------------

def resize(src: Path, tmp_path: Path, sizes: dict[str, int] = SIZES, **options) -> tuple[dict, Path]:
    """Run make_variants into a fresh folder; return its result and the folder."""
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    return make_variants(src, out, sizes, **options), out


def refused(src: Path, tmp_path: Path, **options) -> tuple[str, list[str]]:
    """Run make_variants on a file it must refuse; return the message and what is left in the folder."""
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    with pytest.raises(ImageRejected) as rejected:
        make_variants(src, out, SIZES, **options)
    return str(rejected.value), sorted(path.name for path in out.iterdir())


def opened(path: Path) -> Image.Image:
    """A variant, fully loaded."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


def close_to(pixel, colour, tolerance: int = 40) -> bool:
    """Whether an RGB(A) pixel is within ``tolerance`` of ``colour`` on every channel."""
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def quadrants(size=(400, 300), colours=(RED, GREEN, BLUE, YELLOW)) -> Image.Image:
    """An upright picture: top-left, top-right, bottom-left, bottom-right in four colours."""
    width, height = size
    image = Image.new("RGB", size)
    for index, colour in enumerate(colours):
        box = ((index % 2) * width // 2, (index // 2) * height // 2)
        image.paste(Image.new("RGB", (width // 2, height // 2), colour), box)
    return image


def quadrant_colours(image: Image.Image) -> list[tuple[int, ...]]:
    """The colours at the centres of the four quadrants (TL, TR, BL, BR)."""
    width, height = image.size
    rgb = image.convert("RGB")
    return [rgb.getpixel((x * width // 4, y * height // 4)) for y in (1, 3) for x in (1, 3)]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def s15_16(value: float) -> bytes:
    """An ICC s15Fixed16 number."""
    return struct.pack(">i", round(value * 65536))


def linear_rgb_profile() -> bytes:
    """An ICC v2 profile for sRGB primaries with *linear* tone curves, as scanners and HDR tools write."""
    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15_16(x) + s15_16(y) + s15_16(z)

    text = b"Linear RGB\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 79),
            (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141))]
    tags += [(name, b"curv\0\0\0\0" + struct.pack(">IH", 1, 256) + b"\0\0") for name in (b"rTRC", b"gTRC", b"bTRC")]
    start = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for name, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += name + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + s15_16(0.9642) + s15_16(1.0) + s15_16(0.8249) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


# -- orientation ---------------------------------------------------------------------------------

def test_a_portrait_phone_photo_comes_out_upright(tmp_path):
    """A phone held upright stores the picture on its side with orientation 6; the variants stand up."""
    upright = quadrants((600, 800))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote: 800x600
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "IMG_0001.jpg"
    stored.save(src, exif=exif, quality=95)

    result, out = resize(src, tmp_path)

    assert (result["original"]["width"], result["original"]["height"]) == (600, 800)
    large = opened(out / "large.jpg")
    assert large.size == (192, 256)
    for seen, expected in zip(quadrant_colours(large), (RED, GREEN, BLUE, YELLOW), strict=True):
        assert close_to(seen, expected), (seen, expected)


# How a camera stores an upright picture for each EXIF orientation (the inverse of what a viewer does).
STORED_AS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_exif_orientation_is_shown_the_right_way_up(tmp_path, orientation, fmt):
    """Mirrored and rotated shots (orientations 2-8) all come out as the photographer saw them."""
    upright = quadrants((400, 300))
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / f"shot.{fmt.lower()}"
    upright.transpose(STORED_AS[orientation]).save(src, fmt, exif=exif)

    result, out = resize(src, tmp_path)

    assert (result["original"]["width"], result["original"]["height"]) == (400, 300)
    for name in ("large.jpg", "large.webp"):
        variant = opened(out / name)
        assert variant.size == (256, 192)
        assert [close_to(seen, want) for seen, want in
                zip(quadrant_colours(variant), (RED, GREEN, BLUE, YELLOW), strict=True)] == [True] * 4


# -- privacy -------------------------------------------------------------------------------------

def test_gps_position_camera_details_and_xmp_are_stripped(tmp_path):
    """Where a photo was taken (GPS), the camera and XMP notes appear in no variant, not even as bytes."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Phone 15 Pro"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 36.0)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description photographer="Ann"/></rdf:RDF></x:xmpmeta>'
    src = tmp_path / "holiday.jpg"
    quadrants((400, 300)).save(src, exif=exif, xmp=xmp, comment=b"home address")
    with Image.open(src) as check:  # the test photo really carries it all
        assert check.getexif().get_ifd(0x8825) and "xmp" in check.info

    _result, out = resize(src, tmp_path)

    for path in sorted(out.iterdir()):
        data = path.read_bytes()
        for secret in (b"PhoneMaker", b"Phone 15", b"xmpmeta", b"photographer", b"home address", b"Exif\0\0"):
            assert secret not in data, (path.name, secret)
        variant = opened(path)
        assert not variant.getexif(), path.name
        assert not {"exif", "xmp", "comment"} & variant.info.keys(), path.name


# -- colour --------------------------------------------------------------------------------------

def test_a_photo_with_a_non_srgb_profile_keeps_its_colours(tmp_path):
    """Pixels stored in linear light (with a profile saying so) are converted, not shown too dark."""
    src = tmp_path / "scan.png"
    Image.new("RGB", (300, 200), (128, 128, 128)).save(src, icc_profile=linear_rgb_profile())

    _result, out = resize(src, tmp_path)

    for name in ("large.jpg", "large.webp", "thumb.jpg"):
        variant = opened(out / name)
        assert close_to(variant.getpixel((50, 30)), (188, 188, 188), tolerance=6), name
        profile = variant.info.get("icc_profile")
        assert not profile or ImageCms.getProfileDescription(
            ImageCms.ImageCmsProfile(io.BytesIO(profile))).startswith("sRGB"), name


def test_an_srgb_photo_keeps_its_exact_colours(tmp_path):
    """A photo already tagged sRGB is not shifted by a needless conversion."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "srgb.png"
    Image.new("RGB", (300, 200), (200, 120, 40)).save(src, icc_profile=srgb)

    _result, out = resize(src, tmp_path)

    assert close_to(opened(out / "large.jpg").getpixel((50, 30)), (200, 120, 40), tolerance=3)


def test_a_lab_tiff_from_a_scanner_comes_out_in_srgb(tmp_path):
    """Lab pixels are converted through a Lab profile: a neutral mid grey stays a neutral mid grey."""
    src = tmp_path / "lab.tif"
    Image.new("LAB", (300, 300), (128, 128, 128)).save(src)

    _result, out = resize(src, tmp_path)

    r, g, b = opened(out / "large.jpg").convert("RGB").getpixel((50, 50))
    assert 100 < r < 140 and abs(r - g) < 8 and abs(g - b) < 8, (r, g, b)


@pytest.mark.parametrize("profile", [ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes(),
                                     b"not an ICC profile at all"], ids=["wrong colour space", "garbage"])
def test_an_unusable_colour_profile_is_ignored_not_fatal(tmp_path, profile):
    """A profile that does not fit the pixels (or is not a profile) is skipped; the photo still resizes."""
    src = tmp_path / "odd.png"
    Image.new("RGB", (200, 200), (90, 160, 30)).save(src, icc_profile=profile)

    _result, out = resize(src, tmp_path)

    assert close_to(opened(out / "large.jpg").getpixel((50, 50)), (90, 160, 30), tolerance=3)


def test_a_cmyk_jpeg_from_a_print_shop_keeps_its_colours(tmp_path):
    """CMYK JPEGs become RGB: full magenta+yellow ink is red, cyan+yellow is green, no ink is white."""
    image = Image.new("CMYK", (800, 600), (0, 0, 0, 0))
    image.paste(Image.new("CMYK", (400, 600), (0, 255, 255, 0)), (0, 0))
    image.paste(Image.new("CMYK", (200, 300), (255, 0, 255, 0)), (600, 300))
    src = tmp_path / "flyer.jpg"
    image.save(src, quality=95)

    result, out = resize(src, tmp_path)

    assert result["original"]["mode"] == "CMYK"
    for name in ("large.jpg", "large.webp"):
        variant = opened(out / name)
        assert variant.mode in ("RGB", "RGBA") and variant.size == (256, 192)
        assert close_to(variant.getpixel((60, 96)), RED, 50), name
        assert close_to(variant.getpixel((230, 170)), GREEN, 50), name
        assert close_to(variant.getpixel((230, 20)), WHITE, 20), name


def test_a_grayscale_photo_stays_grey(tmp_path):
    """A black-and-white JPEG gives grey variants of the right size."""
    src = tmp_path / "bw.jpg"
    Image.linear_gradient("L").resize((600, 400)).save(src)

    result, out = resize(src, tmp_path)

    assert result["original"]["mode"] == "L"
    variant = opened(out / "large.webp").convert("RGB")
    assert variant.size == (256, 171)
    r, g, b = variant.getpixel((100, 85))
    assert abs(r - g) <= 3 and abs(g - b) <= 3


# -- bit depths, palettes, transparency, animation ------------------------------------------------

def test_a_16_bit_greyscale_png_keeps_its_tones(tmp_path):
    """16-bit greys are scaled to 8 bits, not clipped: 40000/65535 is a mid grey, not white."""
    src = tmp_path / "deep.png"
    Image.new("I;16", (300, 200), 40000).save(src)

    _result, out = resize(src, tmp_path)

    assert abs(opened(out / "large.jpg").convert("L").getpixel((10, 10)) - 156) <= 2


def test_a_16_bit_rgb_png_from_a_raw_converter_works(tmp_path):
    """48-bit RGB PNGs (16 bits per channel) come out in their colours."""
    width, height = 120, 80
    row = b"\0" + struct.pack(">HHH", 65535, 32768, 0) * width  # filter byte, then orange pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    src = tmp_path / "raw.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                    + png_chunk(b"IDAT", zlib.compress(row * height)) + png_chunk(b"IEND", b""))

    result, out = resize(src, tmp_path)

    assert (result["original"]["width"], result["original"]["height"]) == (120, 80)
    assert close_to(opened(out / "large.jpg").getpixel((20, 20)), (255, 128, 0), 10)


def test_palette_pngs_with_and_without_transparency(tmp_path):
    """Palette images keep their colours; a transparent palette entry stays transparent in WebP."""
    image = Image.new("P", (300, 200), 1)
    image.putpalette([255, 255, 255, 200, 0, 0, 0, 0, 200] + [0] * 759)
    image.paste(2, (0, 0, 150, 200))
    opaque, clear = tmp_path / "opaque.png", tmp_path / "clear.png"
    image.save(opaque)
    image.save(clear, transparency=1)  # the red entry is see-through

    _result, out = resize(opaque, tmp_path)
    assert close_to(opened(out / "large.jpg").getpixel((200, 80)), (200, 0, 0), 20)
    assert opened(out / "large.webp").mode == "RGB"

    _result, out = resize(clear, tmp_path / "second")
    webp = opened(out / "large.webp")
    assert webp.mode == "RGBA" and webp.getpixel((200, 80))[3] == 0 and webp.getpixel((40, 80))[3] == 255
    assert close_to(webp.getpixel((40, 80)), (0, 0, 200), 20)
    assert close_to(opened(out / "large.jpg").getpixel((200, 80)), WHITE, 10)


def test_transparency_is_kept_in_webp_and_flattened_on_white_in_jpeg(tmp_path):
    """A logo on a transparent background: WebP keeps the alpha, JPEG shows white, with no dark fringe."""
    src = tmp_path / "logo.png"
    logo = Image.new("RGBA", (301, 301), (0, 0, 0, 0))  # invisible *black* around the logo
    logo.paste(Image.new("RGBA", (101, 101), (0, 160, 0, 255)), (100, 100))
    logo.save(src)

    _result, out = resize(src, tmp_path, {"thumb": 64, "large": 97})

    webp = opened(out / "large.webp")
    assert webp.mode == "RGBA" and webp.getpixel((5, 5))[3] == 0 and webp.getpixel((48, 48))[3] == 255
    jpeg = opened(out / "large.jpg").convert("RGB")
    assert close_to(jpeg.getpixel((5, 5)), WHITE, 5) and close_to(jpeg.getpixel((48, 48)), (0, 160, 0), 15)
    # Along the logo's soft edge every pixel is a mix of green and white, never darkened by the black.
    assert min(g for _r, g, _b in jpeg.get_flattened_data()) >= 140


def test_grey_with_alpha_is_kept_translucent(tmp_path):
    """An LA image (grey plus alpha) keeps its transparency in WebP."""
    src = tmp_path / "shadow.png"
    Image.new("LA", (300, 200), (40, 100)).save(src)

    _result, out = resize(src, tmp_path)

    r, g, b, a = opened(out / "large.webp").getpixel((30, 30))
    assert 80 <= a <= 120 and abs(r - 40) <= 10 and r == g == b


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_an_animation_gives_a_still_of_its_first_frame(tmp_path, fmt):
    """Animated GIF, WebP and PNG uploads give the first frame as a still picture."""
    frames = [Image.new("RGB", (300, 200), colour) for colour in (RED, GREEN, BLUE)]
    src = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(src, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(src) as check:
        assert check.n_frames == 3

    _result, out = resize(src, tmp_path)

    for name in ("large.jpg", "large.webp"):
        assert close_to(opened(out / name).getpixel((20, 20)), RED, 40), name


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "TIFF", "BMP", "JPEG"])
def test_each_supported_format_resizes(tmp_path, fmt):
    """PNG, GIF, WebP, TIFF, BMP and JPEG uploads all give both files of each size."""
    src = tmp_path / f"photo.{fmt.lower()}"
    quadrants((500, 400)).save(src, fmt)

    result, out = resize(src, tmp_path)

    assert result["original"]["format"] == {"JPEG": "jpeg"}.get(fmt, fmt.lower())
    assert sorted(path.name for path in out.iterdir()) == ["large.jpg", "large.webp", "thumb.jpg", "thumb.webp"]
    assert [close_to(c, e) for c, e in zip(quadrant_colours(opened(out / "large.jpg")),
                                           (RED, GREEN, BLUE, YELLOW), strict=True)] == [True] * 4


def test_a_multi_picture_jpeg_uses_its_main_picture(tmp_path):
    """Cameras that store two pictures in one JPEG (MPO) give variants of the first one."""
    src = tmp_path / "dual.jpg"
    quadrants((1200, 900)).save(src, "MPO", save_all=True, append_images=[Image.new("RGB", (1200, 900))])

    result, out = resize(src, tmp_path)

    assert result["original"]["format"] == "jpeg"
    assert [close_to(c, e) for c, e in zip(quadrant_colours(opened(out / "large.webp")),
                                           (RED, GREEN, BLUE, YELLOW), strict=True)] == [True] * 4


# -- sizes, files and progress -------------------------------------------------------------------

def test_the_result_describes_every_file_and_can_be_stored_as_json(tmp_path):
    """The worker stores the result in the job row: it names each file, its size and dimensions."""
    src = tmp_path / "photo.jpg"
    quadrants((2000, 1500)).save(src, quality=90)

    result, out = resize(src, tmp_path, {"thumb": 320, "medium": 1024, "large": 1600})

    assert json.loads(json.dumps(result)) == result
    assert result["original"] == {"width": 2000, "height": 1500, "format": "jpeg", "mode": "RGB",
                                  "bytes": src.stat().st_size}
    made = {(v["name"], v["format"]): v for v in result["variants"]}
    assert set(made) == {(name, fmt) for name in ("thumb", "medium", "large") for fmt in ("jpeg", "webp")}
    for (name, fmt), variant in made.items():
        path = Path(variant["path"])
        assert path.parent == out and path.name == f"{name}.{'jpg' if fmt == 'jpeg' else 'webp'}"
        assert variant["bytes"] == path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format.lower() == fmt and image.size == (variant["width"], variant["height"])
    assert (made["large", "jpeg"]["width"], made["medium", "webp"]["width"], made["thumb", "jpeg"]["width"]) == (
        1600, 1024, 320)
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(v["path"]).name for v in result["variants"])


def test_a_small_photo_is_never_enlarged(tmp_path):
    """A 200x100 progressive JPEG gives a 200x100 'large' and a 64-pixel thumbnail."""
    src = tmp_path / "small.jpg"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(src, progressive=True)

    result, _out = resize(src, tmp_path)

    assert {(v["name"], v["width"], v["height"]) for v in result["variants"]} == {("large", 200, 100),
                                                                                   ("thumb", 64, 32)}


def test_a_large_progressive_jpeg_is_decoded_at_reduced_scale_correctly(tmp_path):
    """A 3000x2000 progressive JPEG gives exact variant sizes and its colours."""
    src = tmp_path / "big.jpg"
    quadrants((3000, 2000)).save(src, progressive=True, quality=90)

    result, out = resize(src, tmp_path, {"small": 100, "large": 700})

    assert {(v["name"], v["width"], v["height"]) for v in result["variants"]} == {("large", 700, 467),
                                                                                   ("small", 100, 67)}
    assert [close_to(c, e) for c, e in zip(quadrant_colours(opened(out / "small.webp")),
                                           (RED, GREEN, BLUE, YELLOW), strict=True)] == [True] * 4


def test_the_progress_bar_moves_once_per_file_written(tmp_path):
    """progress(done, total) is called after each file is in place, up to 6 of 6 for 3 sizes."""
    src = tmp_path / "photo.jpg"
    quadrants((1200, 900)).save(src)
    out = tmp_path / "out"
    out.mkdir()
    calls = []

    def progress(done: int, total: int) -> None:
        """Record the call and how many finished files exist at that moment."""
        calls.append((done, total, len([p for p in out.iterdir() if not p.name.startswith(".")])))

    make_variants(src, out, {"thumb": 100, "medium": 300, "large": 600}, progress=progress)

    assert [(done, total) for done, total, _ in calls] == [(n, 6) for n in range(1, 7)]
    assert all(files >= done for done, _total, files in calls)


# -- refusals ------------------------------------------------------------------------------------

def test_a_truncated_jpeg_is_refused_not_shown_with_a_grey_bottom(tmp_path):
    """An upload cut off half-way is 'truncated or corrupt', and no variant (or temp file) is left."""
    whole = io.BytesIO()
    Image.effect_noise((800, 600), 50).convert("RGB").save(whole, "JPEG")
    src = tmp_path / "cut.jpg"
    src.write_bytes(whole.getvalue()[: len(whole.getvalue()) * 2 // 3])

    message, left = refused(src, tmp_path)

    assert message == "truncated or corrupt image" and left == []


def test_a_truncated_progressive_jpeg_is_refused(tmp_path):
    """Progressive JPEGs cut short are refused too."""
    whole = io.BytesIO()
    Image.effect_noise((800, 600), 50).convert("RGB").save(whole, "JPEG", progressive=True)
    src = tmp_path / "cut.jpg"
    src.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])

    message, left = refused(src, tmp_path)

    assert message == "truncated or corrupt image" and left == []


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A tiny PNG claiming 50000x50000 pixels is refused from its header, naming its size and the limit."""
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    src = tmp_path / "bomb.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                    + png_chunk(b"IDAT", zlib.compress(b"\0" * 10_000_000, 9)) + png_chunk(b"IEND", b""))
    assert src.stat().st_size < 50_000

    message, left = refused(src, tmp_path)

    assert message == "image too large to process (50000x50000 pixels, limit 100 MP)" and left == []


def test_the_pixel_limit_can_be_set_per_deployment(tmp_path):
    """With a 1 MP limit, a 1500x1000 photo is refused; a 1000x1000 one is fine."""
    big, fine = tmp_path / "big.jpg", tmp_path / "fine.jpg"
    Image.new("RGB", (1500, 1000)).save(big)
    Image.new("RGB", (1000, 1000)).save(fine)

    message, left = refused(big, tmp_path, max_pixels=1_000_000)
    result, _out = resize(fine, tmp_path / "second", max_pixels=1_000_000)

    assert message == "image too large to process (1500x1000 pixels, limit 1 MP)" and left == []
    assert result["original"]["width"] == 1000


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "not an image (looks like a PDF)"),
    (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\0" * 100, "looks like a Windows program"),
    (b"8BPS\x00\x01" + b"\0" * 100, "PSD files are not supported — export as JPEG or PNG"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 100, "this HEIC file could not be read: it may be damaged"),
    (b"Dear customer, please find attached...", "not an image"),
], ids=["zero bytes", "renamed PDF", "renamed exe", "Photoshop file", "HEIC header only", "text"])
def test_files_that_are_not_usable_photos_are_refused_with_a_reason(tmp_path, content, message):
    """A file named .jpg that is empty, a PDF, a program, a PSD, a broken HEIC or text is refused; nothing is written."""
    src = tmp_path / "upload.jpg"
    src.write_bytes(content)

    seen, left = refused(src, tmp_path)

    assert message in seen and left == []


def test_a_jpeg_with_garbage_after_its_header_is_refused(tmp_path):
    """JPEG magic bytes followed by junk is refused as unreadable (possibly damaged), not a crash."""
    src = tmp_path / "junk.jpg"
    src.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(2000))

    message, left = refused(src, tmp_path)

    # Random junk may stop Pillow's parser (unreadable) or its decoder (damaged data): both are honest.
    assert (message == "truncated or corrupt image"
            or message.startswith("this JPEG file could not be read: it may be damaged")) and left == []


def test_a_failure_while_writing_removes_the_variants_already_written(tmp_path):
    """If one file cannot be written, the others are removed, files that were there before are kept."""
    src = tmp_path / "photo.jpg"
    quadrants((800, 600)).save(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep-me.txt").write_text("not ours")
    (out / "thumb.webp").mkdir()  # a directory where the last file should go

    with pytest.raises(OSError):
        make_variants(src, out, SIZES)

    assert sorted(path.name for path in out.iterdir()) == ["keep-me.txt", "thumb.webp"]


# -- memory --------------------------------------------------------------------------------------

def run_child(code: str) -> str:
    """Run Python code in a fresh interpreter from the project root; return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_24_megapixel_photo_never_exists_at_full_size_in_memory(tmp_path):
    """1600/1024/320 px variants of a 6000x4000 JPEG cost less memory than one full decode (96 MB in Pillow)."""
    src = tmp_path / "camera.jpg"
    quadrants((6000, 4000)).save(src, quality=90)
    out = tmp_path / "out"
    out.mkdir()

    peak_mb = float(run_child(
        "import resource\n"
        "from jobs.imaging import make_variants\n"
        "def peak():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024\n"
        "before = peak()\n"
        f"make_variants({str(src)!r}, {str(out)!r}, {{'thumb': 320, 'medium': 1024, 'large': 1600}})\n"
        "print(peak() - before)\n"))

    assert peak_mb < 60, f"variants added {peak_mb:.0f} MB to the peak; a full decode alone is 96 MB"


def test_running_out_of_memory_is_reported_as_too_large(tmp_path):
    """On a worker with a memory cap, a huge-but-allowed PNG fails with 'image too large', leaving no files."""
    src = tmp_path / "poster.png"
    Image.new("RGB", (9000, 9000), (200, 10, 10)).save(src)  # 81 MP (243 MB decoded), small on disk
    out = tmp_path / "out"
    out.mkdir()

    printed = run_child(
        "import resource\n"
        "from jobs.imaging import ImageRejected, make_variants\n"
        "vm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize')) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))\n"
        "try:\n"
        f"    make_variants({str(src)!r}, {str(out)!r}, {{'large': 1600}})\n"
        "except ImageRejected as exc:\n"
        "    print(exc)\n")

    assert printed == "image too large to process" and list(out.iterdir()) == []


# -- the web process's cheap check ----------------------------------------------------------------

@pytest.mark.parametrize(("head", "expected"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
    (b"\xff\xd8\xff\xe1\x00\x10Exif", "jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
    (b"GIF89a\x01\x00", "gif"),
    (b"GIF87a\x01\x00", "gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
    (b"II*\x00\x08\x00\x00\x00", "tiff"),
    (b"MM\x00*\x00\x00\x00\x08", "tiff"),
    (b"BM\x00\x00\x00\x00", "bmp"),
    (b"II+\x00\x08\x00\x00\x00", "tiff"),
    (b"MM\x00+\x00\x08\x00\x00", "tiff"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heic"),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "heic"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "avif"),
    (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avif", "avif"),
])
def test_the_web_process_recognises_images_by_their_first_bytes(head, expected):
    """The cheap check names the format from the first bytes, without decoding anything."""
    assert sniff_image_type(head + b"\x00" * 48) == expected


@pytest.mark.parametrize(("head", "message"), [
    (b"8BPS\x00\x01\x00\x00", "PSD files are not supported — export as JPEG or PNG"),
    (b"%!PS-Adobe-3.0 EPSF-3.0", "EPS files are not supported"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 files are not supported"),
    (b"\x00\x00\x01\x00\x01\x00", "ICO \\(icon\\) files are not supported"),
    (b"\x00\x00\x00\x18ftypcrx \x00\x00", "Canon CR3"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00", "looks like a video"),
    (b"MZ\x90\x00", "looks like a Windows program"),
    (b"%PDF-1.4", "looks like a PDF"),
    (b"PK\x03\x04", "looks like a ZIP"),
    (b"", "empty file"),
    (b"hello world", "not an image"),
])
def test_the_web_process_explains_what_is_not_an_image(head, message):
    """Photoshop, EPS, JPEG 2000, icons, camera raw, videos, programs, PDFs, archives, empty and unknown
    files get a reason a person understands."""
    with pytest.raises(ImageRejected, match=message):
        sniff_image_type(head)


# -- photos from any camera: HEIC, AVIF, BigTIFF, deep greys, and a corpus of real files ---------

SAMPLES = ROOT / "tests" / "samples" / "pillow"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text(encoding="utf-8"))


def test_an_iphone_heic_photo_is_resized_in_its_colours(tmp_path):
    """A HEIC written by libheif's own encoder (as an iPhone would) comes out upright in its colours."""
    from pillow_heif import register_heif_opener
    register_heif_opener()
    src = tmp_path / "IMG_0001.HEIC"
    quadrants((400, 300)).save(src, "HEIF", quality=90)
    assert sniff_image_type(src.read_bytes()[:64]) == "heic"

    result, out = resize(src, tmp_path)

    assert result["original"]["format"] == "heic"
    assert [close_to(c, want, 50) for c, want in
            zip(quadrant_colours(opened(out / "large.jpg")), (RED, GREEN, BLUE, YELLOW), strict=True)] == [True] * 4


def test_an_avif_photo_is_resized_in_its_colours(tmp_path):
    """An AVIF (Android phones, browsers' 'save image') is read by Pillow's own AVIF plugin."""
    src = tmp_path / "photo.avif"
    quadrants((400, 300)).save(src, "AVIF", quality=90)
    assert sniff_image_type(src.read_bytes()[:64]) == "avif"

    result, out = resize(src, tmp_path)

    assert result["original"]["format"] == "avif" and opened(out / "large.webp").size == (256, 192)
    assert [close_to(c, want, 50) for c, want in
            zip(quadrant_colours(opened(out / "large.jpg")), (RED, GREEN, BLUE, YELLOW), strict=True)] == [True] * 4


def test_a_bigtiff_from_a_scanner_is_resized(tmp_path):
    """BigTIFF (64-bit offsets, 'II+') is recognised and read like any TIFF."""
    src = SAMPLES / "hopper_bigtiff.tif"
    assert src.read_bytes()[:4] == b"II+\x00"

    result, out = resize(src, tmp_path)

    assert result["original"]["format"] == "tiff" and (out / "thumb.jpg").exists()


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16_and_32_bit_greyscale_tiffs_keep_their_tones(tmp_path, mode):
    """A mid grey stored in 16 bits (either byte order) or in a 32-bit TIFF comes out mid grey, not white or black."""
    src = tmp_path / "scan.tif"
    Image.new(mode, (300, 200), 40000).save(src)

    result, out = resize(src, tmp_path)

    assert result["original"]["mode"].startswith("I")
    for name in ("large.jpg", "thumb.jpg", "large.webp"):
        assert abs(opened(out / name).convert("L").getpixel((10, 10)) - 156) <= 2, name


def test_a_32_bit_tiff_using_its_full_range_is_scaled_by_32_bits(tmp_path):
    """Values beyond 16 bits are scaled by the 32-bit range (signed: the largest positive is white)."""
    src = tmp_path / "deep.tif"
    Image.new("I", (300, 200), 40000 << 15).save(src)  # 156/256 of 2**31

    _result, out = resize(src, tmp_path)

    assert abs(opened(out / "large.jpg").convert("L").getpixel((10, 10)) - 156) <= 2


def test_a_float_tiff_from_0_to_1_keeps_its_tones(tmp_path):
    """32-bit float greys in 0-1 (HDR tools) come out scaled to 0-255, not black."""
    src = tmp_path / "float.tif"
    Image.new("F", (300, 200), 0.5).save(src)

    _result, out = resize(src, tmp_path)

    assert abs(opened(out / "large.jpg").convert("L").getpixel((10, 10)) - 127) <= 2


@pytest.mark.parametrize("name", ["hopper_webp.tif", "unknown_compression_method.png",
                                  "hopper_unknown_pixel_mode.tif"])
def test_a_valid_file_pillow_cannot_decode_is_not_called_corrupt(tmp_path, name):
    """A WebP-compressed TIFF or an unknown PNG compression is refused with advice, not as 'truncated or corrupt'."""
    message, left = refused(SAMPLES / name, tmp_path)

    assert "corrupt" not in message and "truncated" not in message
    assert message.endswith("export as JPEG or PNG") and left == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_file_gives_variants_or_a_clear_refusal(tmp_path, name):
    """Each of Pillow's own test images either becomes readable variants or is refused with its known reason;
    nothing else (no crash, no other exception type) ever comes out."""
    out = tmp_path / "out"
    out.mkdir()
    try:
        result = make_variants(SAMPLES / name, out, SIZES)
    except ImageRejected as exc:
        assert str(exc) == EXPECTED[name]
        assert list(out.iterdir()) == []
        return
    assert EXPECTED[name] == "made"
    assert sorted(path.name for path in out.iterdir()) == ["large.jpg", "large.webp", "thumb.jpg", "thumb.webp"]
    for variant in result["variants"]:
        assert opened(Path(variant["path"])).size == (variant["width"], variant["height"])


def test_the_sample_corpus_is_mostly_made_and_every_refusal_names_a_reason():
    """The corpus holds both kinds: most samples become variants, refusals are sentences, not codes."""
    made = [name for name, outcome in EXPECTED.items() if outcome == "made"]
    assert len(EXPECTED) >= 100 and len(made) >= 80
    assert all(len(outcome) > 12 for outcome in EXPECTED.values() if outcome != "made")
