"""What real photos do to a resizer, made with Pillow: each case comes out right or is refused clearly."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageCms

from jobs.imaging import make_variants
from webapp.image_types import ImageRejected, sniff_image_type

SIZES = {"thumb": 64, "large": 256}


def variants(src, tmp_path, sizes=SIZES):
    """Run make_variants into a fresh folder; return the result and the folder."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return make_variants(src, out, sizes), out


def two_tone(size=(400, 300), top=(255, 0, 0), bottom=(0, 0, 255), mode="RGB") -> Image.Image:
    """An image whose top half and bottom half differ, to check orientation."""
    image = Image.new(mode, size, bottom)
    image.paste(Image.new(mode, (size[0], size[1] // 2), top), (0, 0))
    return image


def test_a_portrait_phone_photo_comes_out_upright(tmp_path):
    """A landscape sensor image tagged 'rotate 90' (EXIF orientation 6) is made portrait, top stays top."""
    # The sensor stores it on its side (400x300); the tag says "turn 90 degrees clockwise to view".
    stored = two_tone((300, 400), top=(255, 0, 0), bottom=(0, 0, 255)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "phone.jpg"
    stored.save(src, "JPEG", exif=exif, quality=95)
    result, out = variants(src, tmp_path)
    assert (result["original"]["width"], result["original"]["height"]) == (300, 400)
    with Image.open(out / "large.jpg") as large:
        assert large.size == (192, 256)
        r, _g, b = large.convert("RGB").getpixel((96, 20))
        assert r > 200 and b < 60, "red is at the top"


def test_gps_and_other_metadata_are_stripped(tmp_path):
    """No EXIF (and so no GPS position) survives in any variant."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[2] = (52.0, 31.0, 12.0)
    src = tmp_path / "gps.jpg"
    Image.new("RGB", (300, 200), (10, 200, 10)).save(src, "JPEG", exif=exif)
    _result, out = variants(src, tmp_path)
    for path in out.iterdir():
        with Image.open(path) as variant:
            assert not variant.getexif(), path.name
            assert "exif" not in variant.info and "xmp" not in variant.info


def test_a_colour_profile_is_honoured(tmp_path):
    """Lab pixels with their profile are converted to sRGB (mid grey stays mid grey, not garbage)."""
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    src = tmp_path / "lab.tif"
    Image.new("LAB", (200, 200), (128, 128, 128)).save(src, icc_profile=lab)
    _result, out = variants(src, tmp_path)
    with Image.open(out / "large.jpg") as converted:
        r, g, b = converted.getpixel((50, 50))
        assert 100 < r < 140 and abs(r - g) < 8 and abs(g - b) < 8, (r, g, b)
        assert "icc_profile" not in converted.info


def test_an_unusable_colour_profile_is_ignored_not_fatal(tmp_path):
    """An RGB photo carrying a profile for another colour space still resizes, colours untouched."""
    grey = (128, 128, 128)
    xyz_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()
    src = tmp_path / "odd.png"
    Image.new("RGB", (200, 200), grey).save(src, icc_profile=xyz_profile)
    _result, out = variants(src, tmp_path)
    with Image.open(out / "large.jpg") as untouched:
        assert all(abs(a - b) <= 2 for a, b in zip(untouched.getpixel((50, 50)), grey, strict=True))


def test_a_cmyk_jpeg_keeps_its_colours(tmp_path):
    """A CMYK JPEG (print workflows) becomes RGB with roughly the same colour."""
    src = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (300, 300), (0, 255, 255, 0)).save(src, "JPEG", quality=95)
    result, out = variants(src, tmp_path)
    assert result["original"]["mode"] == "CMYK"
    with Image.open(out / "large.jpg") as variant:
        r, g, b = variant.convert("RGB").getpixel((100, 100))
        assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_sixteen_bit_and_palette_pngs_work(tmp_path):
    """16-bit greyscale and palette PNGs (with transparency) both resize."""
    deep = tmp_path / "deep.png"
    Image.new("I;16", (300, 200), 40000).save(deep)
    result, out = variants(deep, tmp_path)
    with Image.open(out / "large.jpg") as variant:
        assert variant.mode in ("L", "RGB") and variant.getpixel((10, 10)) in (156, (156, 156, 156))
    palette = tmp_path / "palette.png"
    image = Image.new("P", (300, 200), 1)
    image.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    image.save(palette, transparency=0)
    result, out = variants(palette, tmp_path)
    assert len(result["variants"]) == 4


def test_transparency_is_kept_in_webp_and_flattened_on_white_in_jpeg(tmp_path):
    """A transparent PNG: WebP keeps alpha, JPEG shows white where it was transparent."""
    src = tmp_path / "logo.png"
    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (100, 100), (0, 128, 0, 255)), (100, 100))
    image.save(src)
    _result, out = variants(src, tmp_path)
    with Image.open(out / "large.webp") as webp:
        assert webp.mode == "RGBA" and webp.getpixel((5, 5))[3] == 0
    with Image.open(out / "large.jpg") as jpeg:
        assert min(jpeg.convert("RGB").getpixel((5, 5))) > 245


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    """Animated GIFs and WebPs give a still of the first frame."""
    frames = [Image.new("RGB", (120, 80), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0)
    _result, out = variants(src, tmp_path)
    with Image.open(out / "large.jpg") as still:
        r, g, b = still.convert("RGB").getpixel((10, 10))
        assert r > 200 and g < 60


def test_a_progressive_and_a_large_jpeg_are_fine_and_never_upscaled(tmp_path):
    """Progressive JPEGs decode; a small photo is never enlarged."""
    src = tmp_path / "prog.jpg"
    Image.new("RGB", (200, 100), (1, 2, 3)).save(src, "JPEG", progressive=True)
    result, _out = variants(src, tmp_path)
    assert {(v["name"], v["width"]) for v in result["variants"]} == {("thumb", 64), ("large", 200)}


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares huge dimensions (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bomb.png", _png_header_only(50_000, 50_000), "image too large to process"),
    ("empty.jpg", b"", "empty file"),
    ("invoice.jpg", b"%PDF-1.7\n" + b"0" * 100, "not"),
])
def test_bad_inputs_are_refused_clearly_and_leave_no_files(tmp_path, name, content, message):
    """A bomb, an empty file and a renamed PDF are refused with a reason and nothing is written."""
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ImageRejected, match=message):
        make_variants(src, out, SIZES)
    assert list(out.iterdir()) == []


def test_a_truncated_jpeg_is_refused_not_half_grey(tmp_path):
    """A JPEG cut short is reported as truncated or corrupt, with no partial variants left."""
    whole = io.BytesIO()
    Image.effect_noise((800, 600), 50).convert("RGB").save(whole, "JPEG")
    src = tmp_path / "cut.jpg"
    src.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        make_variants(src, out, SIZES)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("head", "expected"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
    (b"GIF89a\x01\x00", "gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
    (b"II*\x00\x08\x00\x00\x00", "tiff"),
    (b"BM\x00\x00\x00\x00", "bmp"),
])
def test_the_web_process_recognises_images_by_their_first_bytes(head, expected):
    """The cheap check names the format without decoding anything."""
    assert sniff_image_type(head + b"\x00" * 32) == expected


@pytest.mark.parametrize(("head", "message"), [
    (b"\x00\x00\x00\x18ftypheic", "HEIC photos are not supported"),
    (b"\x00\x00\x00\x1cftypavif", "AVIF photos are not supported"),
    (b"MZ\x90\x00", "looks like a Windows program"),
    (b"%PDF-1.4", "looks like a PDF"),
    (b"", "empty file"),
    (b"hello world", "not an image"),
])
def test_the_web_process_explains_what_is_not_an_image(head, message):
    """HEIC, programs, PDFs, empty and unknown files get a reason a person understands."""
    with pytest.raises(ImageRejected, match=message):
        sniff_image_type(head)
