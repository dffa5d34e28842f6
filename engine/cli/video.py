"""``stylegrad video IN --style S -o OUT.mp4``: a clip stylised frame by frame with temporal
consistency (``stylegrad.video``; README "Video").

Everything that can be refused is refused before anything is written (exit 2): options, the
video (``stylegrad.video.io.probe``: not a video, no video stream, zero frames, variable frame
rate, a codec the wheel cannot decode), the style images, the output (extension, folder, not
an input), the memory of one frame (estimated, ``stylegrad.run.memory``; a huge resolution is
refused with the estimate). Then the job folder runs (``stylegrad.video.job``): a manifest line
per finished frame; ``--resume`` continues after a kill from the last finished frame.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from stylegrad.cli.options import add_config_options, config_from_args
from stylegrad.config import StyleConfig
from stylegrad.run import progress as prog

# StyleConfig fields that do not apply to a video (one scale, one frame at a time, no snapshots)
NOT_FOR_VIDEO = ("min_size", "iters_last", "batch_size", "save_every")
# a video's warm-started frames need fewer iterations than a still: --iters is theirs
VIDEO_BASE = StyleConfig(iters=200)


def add_video_command(sub) -> None:
    import dataclasses

    v = sub.add_parser("video", help="stylise a video without flicker (optical flow, temporal loss; resumable)")
    v.add_argument("input", metavar="IN", help="video file (any container/codec FFmpeg reads)")
    v.add_argument("--style", action="append", required=True, metavar="S", help="style image (repeat to blend)")
    v.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output video (.mp4, .mov, .mkv: H.264 when available; .webm: VP9)")
    v.add_argument("--temporal-weight", type=float, default=None,
                   help="weight of the temporal loss (mean squared difference from the warped previous "
                        "stylised frame where the flow is reliable); 0 turns it off (default 1e11 for "
                        "Caffe-convention weights, 1e11/57.6^2 = 3e7 for torchvision-convention ones)")
    v.add_argument("--flow", choices=("dis", "farneback"), default="dis",
                   help="OpenCV optical flow: DIS (default) or Farneback")
    v.add_argument("--first-iters", type=int, default=None, metavar="N",
                   help="iterations of the first frame (and of every frame with --no-warm-start); "
                        "default 2.5 x --iters")
    v.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="start every frame as --init says instead of from the warped previous frame")
    v.add_argument("--frames", metavar="A:B", default=None,
                   help="only source frames A to B-1 (0-based; either may be empty)")
    v.add_argument("--fps", type=float, default=None,
                   help="output frame rate (at most the source's; frames are dropped to reach it)")
    v.add_argument("--crf", type=int, default=18, help="H.264 quality, 0 (lossless) to 51 (default %(default)s)")
    v.add_argument("--keep-frames", metavar="DIR", default=None, help="also write the stylised frames as PNGs into DIR")
    v.add_argument("--job-dir", metavar="DIR", default=None,
                   help="job folder (manifest, frames); default OUT.job, removed after success. "
                        "Given: kept (stylegrad job status DIR)")
    v.add_argument("--resume", action="store_true", help="continue the job folder's run from its last finished frame")
    v.add_argument("--force", action="store_true", help="start the job folder over (its frames are redone)")
    v.add_argument("--quiet", action="store_true", help="no progress, only errors")
    names = [f.name for f in dataclasses.fields(StyleConfig) if f.name not in NOT_FOR_VIDEO]
    add_config_options(v, names, base=VIDEO_BASE)


def _settings(args):
    from stylegrad.video.job import VideoSettings, parse_frames

    s = VideoSettings(temporal_weight=args.temporal_weight, flow=args.flow, first_iters=args.first_iters,
                      warm_start=args.warm_start, frames=parse_frames(args.frames) if args.frames else None,
                      fps=args.fps, crf=args.crf)
    s.check()
    return s


def cmd_video(args) -> int:
    from stylegrad.backends.registry import resolve_backend_and_precision
    from stylegrad.errors import ConfigError
    from stylegrad.io import images as imgs
    from stylegrad.io.fileio import check_writable_folder, output_lock
    from stylegrad.run import memory
    from stylegrad.run.stylizer import Stylizer, parse_device
    from stylegrad.video import io as vio
    from stylegrad.video.job import estimate_memory, plan_video, prepare_job_dir, run_video_job

    config = config_from_args(args)
    if config.original_colors == "luminance":
        raise ConfigError("--original-colors luminance is not supported by stylegrad video (use postprocess)")
    settings = _settings(args)
    out = Path(args.output)
    vio.container_format(out)
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; give a file name such as {out / 'stylised.mp4'}")
    info = vio.probe(args.input)
    for i in [args.input] + list(args.style):
        if imgs.same_file(out, i):
            raise ConfigError(f"output {out} is an input; refusing to overwrite it")
    why = check_writable_folder(out.parent)
    if why:
        raise ConfigError(f"cannot write the output: {why}")
    style_hw = [imgs.image_size(s) for s in args.style]
    plan = plan_video(info, config, settings)
    config = config.replace(size=max(plan.size_hw))
    device = parse_device(config.device)
    backend, precision = resolve_backend_and_precision(config.backend, device, config.precision, config.size)
    config = config.replace(precision=precision)    # the memory estimate counts what will run
    memory.check_fits(estimate_memory(plan, config, style_hw, backend), config, device,
                      f"one {info.width}x{info.height} frame stylised at {plan.size_hw[1]}x{plan.size_hw[0]} px")
    job_dir = Path(args.job_dir) if args.job_dir else out.with_name(out.name + ".job")
    prepare_job_dir(job_dir, args.resume, args.force)
    keep = Path(args.keep_frames) if args.keep_frames else None
    say = (lambda text: None) if args.quiet else (lambda text: print(f"stylegrad: {text}", file=sys.stderr, flush=True))
    say(f"{info.path}: {info.describe()}; stylising {len(plan.source_frames)} frame(s) at "
        f"{plan.size_hw[1]}x{plan.size_hw[0]}, {float(plan.fps):g} fps")
    stylizer = Stylizer(config)
    listener = _Progress(None if args.quiet else say, len(plan.source_frames),
                         args.print_every if "print_every" in vars(args) else None)
    try:
        stylizer.set_styles(args.style)
        with output_lock(out):
            result = run_video_job(stylizer, plan, settings, out, job_dir, list(args.style), args.resume, keep,
                                   listener)
    finally:
        listener.close()
        stylizer.close()
    if not args.job_dir:
        shutil.rmtree(job_dir, ignore_errors=True)
    preferred = vio.VIDEO_CODECS.get(vio.container_format(out), vio.DEFAULT_CODECS)[0]
    note = "" if result.codec == preferred else f" (no {preferred} encoder in this FFmpeg: {result.codec} used)"
    say(f"video {out}: {result.frames} frames ({result.frames - result.done_before} stylised now, "
        f"{result.done_before} done before) in {prog.format_duration(result.seconds)}, codec {result.codec}{note}")
    return 0


class _Progress:
    """Per-frame and overall progress: two bars on a terminal, else plain lines (each frame's
    iterations throttled as stylize's are, a line per finished frame with the time left)."""

    def __init__(self, say, frames: int, every):
        self.say, self.frames, self.every = say, frames, every
        self.tty = sys.stderr.isatty() and say is not None
        self.t0 = time.perf_counter()
        self.done_now, self.skipped = 0, 0
        self.throttle = prog.LineThrottle(every)
        self.bars = None

    def _eta(self) -> float:
        if self.done_now == 0:
            return float("nan")
        per = (time.perf_counter() - self.t0) / self.done_now
        return per * (self.frames - self.skipped - self.done_now)

    def __call__(self, ev) -> None:
        if self.say is None:
            return
        if self.tty and self.bars is None and ev.kind in ("start", "skip"):
            from tqdm import tqdm

            self.bars = (tqdm(total=self.frames, desc="frames", unit="frame", file=sys.stderr, position=0),
                         tqdm(total=0, desc="frame", unit="it", file=sys.stderr, position=1, leave=False))
        if ev.kind == "skip":
            self.skipped += 1
            if self.bars:
                self.bars[0].update(1)
        elif ev.kind == "start":
            self.t_frame = time.perf_counter()
            if self.bars:
                self.bars[1].reset(total=None)
                self.bars[1].set_description(f"frame {ev.frame + 1}/{ev.frames}")
        elif ev.kind == "iter":
            p = ev.progress
            if self.bars:
                self.bars[1].total = p.iters
                self.bars[1].n = p.iter
                self.bars[1].set_postfix_str(f"loss {p.loss:.3e}", refresh=True)
            elif p.iter < p.iters and self.throttle.due(p.iter):
                ms = (time.perf_counter() - self.t_frame) * 1e3 / p.iter if p.iter else None
                eta = self._eta() if self.done_now else None
                self.say(prog.progress_line(f"frame {ev.frame + 1}/{ev.frames}", "", p.iter, p.iters, p.loss, ms,
                                            eta).replace(" : ", ": ", 1))
        elif ev.kind == "done":
            self.done_now += 1
            r = ev.record
            werr = f", warping error {r['warping_error']:.4f}" if r.get("warping_error") is not None else ""
            if self.bars:
                self.bars[0].update(1)
            else:
                self.say(f"frame {ev.frame + 1}/{ev.frames} done in {r['seconds']:.1f} s (loss {r['loss']:.4g}, "
                         f"temporal {r['temporal']:.4g}{werr}); {ev.frames - ev.frame - 1} left, "
                         f"ETA {prog.format_duration(self._eta())}")

    def close(self) -> None:
        if self.bars:
            for b in self.bars:
                b.close()
            self.bars = None
