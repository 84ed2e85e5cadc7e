"""Photo resize of a 48 MP JPEG: naive open+resize, a careless chain, and Backhaul's variant set."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from bench.measure import measure
from jobs.imaging import make_variants

SIZES = {"thumb": 320, "medium": 1024, "large": 1600}


def make_photo(path: str, width: int, height: int) -> str:
    """A photo-like JPEG (smooth gradients with grain) of the given size."""
    base = Image.linear_gradient("L").resize((width, height))
    grain = Image.effect_noise((width, height), 12)
    Image.merge("RGB", (base, Image.blend(base, grain, 0.35), grain)).save(path, quality=90)
    return path


def naive(src: str, out: str) -> None:
    """Decode at full size and resize to 1600x1200."""
    with Image.open(src) as im:
        im.resize((1600, 1200)).save(out, quality=85)


def careless(src: str, out_dir: str) -> None:
    """exif_transpose, RGBA convert, LANCZOS from the original for every size."""
    with Image.open(src) as im:
        upright = ImageOps.exif_transpose(im).convert("RGBA")
        for name, edge in SIZES.items():
            scale = edge / max(upright.size)
            resized = upright.resize((round(upright.width * scale), round(upright.height * scale)),
                                     Image.Resampling.LANCZOS)
            resized.convert("RGB").save(f"{out_dir}/{name}.jpg", quality=85)
            resized.save(f"{out_dir}/{name}.webp", quality=80)


def backhaul(src: str, out_dir: str) -> dict:
    """The whole variant set (3 sizes x JPEG + WebP) as a worker makes it."""
    made = make_variants(src, out_dir, SIZES)
    return {"files": len(made["variants"])}


def run(quick: bool = False) -> list[dict]:
    """All three variants on the same photo in one run."""
    folder = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    width, height = (1600, 1200) if quick else (8000, 6000)
    src = make_photo(str(folder / "photo.jpg"), width, height)
    size = f"{width * height / 1e6:.0f} MP, {Path(src).stat().st_size / 1e6:.1f} MB"
    repeat = 1 if quick else 5
    for name in ("careless", "backhaul"):
        (folder / name).mkdir()
    return [
        {"benchmark": "Photo resize", "variant": "naive open+resize (1 size)", "size": size,
         **measure("bench.photos:naive", src, str(folder / "naive.jpg"), repeat=repeat)},
        {"benchmark": "Photo resize", "variant": "careless chain (3 sizes x 2 formats)", "size": size,
         **measure("bench.photos:careless", src, str(folder / "careless"), repeat=repeat)},
        {"benchmark": "Photo resize", "variant": "backhaul (3 sizes x 2 formats)", "size": size,
         **measure("bench.photos:backhaul", src, str(folder / "backhaul"), repeat=repeat)},
    ]
