"""Photo resize: one big camera JPEG to web sizes, three ways, each in a fresh process.

- naive: decode at full size, resize to 1600x1200, save (one file);
- careless: the usual chain (exif_transpose, RGBA, LANCZOS from the original for
  every size, Pillow's default WebP settings): the full variant set, 3 sizes x 2 formats;
- backhaul: ``jobs.imaging.make_variants``, the same variant set.

The photo is synthetic but photo-like (shapes, texture and sensor grain), so that it
compresses like a real one: ~15 MB at 48 MP. Run ``python -m bench.photos [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops, ImageOps

from bench.measure import measure
from jobs.imaging import make_variants

SIZES = {"thumb": 320, "medium": 1024, "large": 1600}


def make_photo(path: str, width: int, height: int) -> str:
    """Write a photo-like JPEG of the given size: a scene, mid-scale texture and fine grain."""
    scene = Image.effect_mandelbrot((width // 8, height // 8), (-2.1, -1.2, 0.9, 1.2), 60)
    scene = scene.resize((width, height), Image.Resampling.BICUBIC)
    texture = Image.effect_noise((width // 32, height // 32), 60).resize((width, height), Image.Resampling.BICUBIC)
    sky = Image.linear_gradient("L").resize((width, height))
    grain = Image.effect_noise((width, height), 6)
    channels = (Image.blend(scene, texture, 0.4), Image.blend(sky, texture, 0.5), Image.blend(scene, sky, 0.5))
    Image.merge("RGB", [ImageChops.add(channel, grain, 1.0, -128) for channel in channels]).save(path, quality=90)
    return path


def naive(src: str, out: str) -> None:
    """Decode at full size, resize to 1600x1200 and save: one file, as a view function would."""
    with Image.open(src) as image:
        image.resize((1600, 1200)).save(out, quality=85)


def careless(src: str, out_dir: str) -> None:
    """The usual chain: exif_transpose, RGBA, LANCZOS from the full image for each size, default WebP."""
    with Image.open(src) as image:
        upright = ImageOps.exif_transpose(image).convert("RGBA")
    for name, longest in SIZES.items():
        scale = longest / max(upright.size)
        resized = upright.resize((round(upright.width * scale), round(upright.height * scale)),
                                 Image.Resampling.LANCZOS)
        resized.convert("RGB").save(f"{out_dir}/{name}.jpg", quality=85)
        resized.save(f"{out_dir}/{name}.webp", quality=80)


def backhaul(src: str, out_dir: str) -> dict:
    """Backhaul's variant set (3 sizes x JPEG + WebP), as a worker makes it."""
    made = make_variants(src, out_dir, SIZES)
    return {"files": len(made["variants"])}


def run(quick: bool = False) -> list[dict]:
    """Measure the three ways on the same photo (48 MP; quick: 2 MP, one run each)."""
    width, height = (1632, 1224) if quick else (8000, 6000)
    repeat = 1 if quick else 5
    megapixels = round(width * height / 1e6)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as folder:
        src = make_photo(f"{folder}/photo.jpg", width, height)
        size = f"{width}x{height}, {Path(src).stat().st_size / 1e6:.1f} MB"
        ways = (("naive", "1 size, JPEG only"), ("careless", "3 sizes x JPEG+WebP"),
                ("backhaul", "3 sizes x JPEG+WebP"))
        for variant, note in ways:
            out = f"{folder}/{variant}"
            Path(out).mkdir()
            target = f"{out}/large.jpg" if variant == "naive" else out
            measured = measure(f"bench.photos:{variant}", src, target, repeat=repeat)
            measured.pop("extra", None)
            rows.append({"benchmark": f"Photo resize {megapixels} MP", "variant": variant, **measured,
                         "size": size, "note": note})
    return rows


def print_table(rows: list[dict]) -> None:
    """Print the rows as a plain table."""
    print(f"{'benchmark':<20} {'variant':<9} {'median s':>8} {'min s':>6} {'max s':>6} {'peak MB':>8} {'runs':>4}  note")
    for row in rows:
        print(f"{row['benchmark']:<20} {row['variant']:<9} {row['seconds']:>8.3f} {row['min']:>6.3f} "
              f"{row['max']:>6.3f} {row['peak_rss_mb']:>8.0f} {row['runs']:>4}  {row['note']} ({row['size']})")


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv[1:]))
