"""A video stylised as a resumable job of frames (``stylegrad video``).

The job folder holds the manifest ``stylegrad-job.jsonl`` (``stylegrad.jobs.manifest``: locked
while a run works, one fsync'd line per record) and ``frames/NNNNNN.png``, the stylised frames.
A ``run`` record lists every frame of the plan as an input (``IN.mp4#frame=N``) with its output
PNG, so ``stylegrad job status`` counts frames like images. Each finished frame appends an
``image`` record (its PNG's hash, seconds, losses, warping error) after the PNG is in place.

Frames depend on the previous stylised frame, so they run in order; ``resume`` continues from
the first frame without an ok record (for these settings, with its PNG on disk and the hash
recorded), warm-starting from the PNG of the frame before it. Every run uses the previous frame
*as written* (8-bit PNG), so a resumed video is the one an uninterrupted run makes.

Per frame t (Ruder, Dosovitskiy & Brox 2016): flow between the content frames t-1 and t
(``stylegrad.video.flow``), the stylised frame t-1 warped by the backward flow, the initial
image = that warp with disoccluded pixels from the content frame (``warm_start``), and the
temporal term with the consistency weight (``stylegrad.video.temporal``) added to the objective
(``temporal_weight`` 0 leaves it out). The first frame starts as ``config.init`` says.
"""
from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from stylegrad import __version__
from stylegrad.config import CAFFE_FEATURE_RATIO, StyleConfig
from stylegrad.errors import ConfigError, RunFailedError, StyleGradError
from stylegrad.io import images as imgs
from stylegrad.io.fileio import atomic_write, file_sha256
from stylegrad.jobs.manifest import ManifestWriter, load_state, manifest_path, now
from stylegrad.jobs.settings import differing, pixel_settings, settings_hash
from stylegrad.run import memory
from stylegrad.run.progress import finite_or_null
from stylegrad.video import flow as flowmod
from stylegrad.video import io as vio
from stylegrad.video.temporal import TemporalTerm, warm_start

FRAMES_DIR = "frames"

# The default temporal weight per input convention. The temporal term is a mean over [0, 1]
# pixels while the content term is a sum over Caffe-scale features (~1e8..1e9 at 100 px), so
# its weight is large; chosen on the trained VGG16 at 96 px (bench/video_consistency.py, README
# "Video"), where 1e4..1e7 changed nothing against the warm start alone and 1e11 lowered the
# warping error by a third at +7% style loss. Under torchvision's convention the content term is
# CAFFE_FEATURE_RATIO^2 smaller, so is the weight (derived, not measured).
DEFAULT_TEMPORAL_WEIGHT = {"caffe": 1.0e11, "torchvision": 1.0e11 / CAFFE_FEATURE_RATIO ** 2}


@dataclass(frozen=True)
class VideoSettings:
    """The options of ``stylegrad video`` besides the StyleConfig (defaults: the CLI's)."""

    temporal_weight: Optional[float] = None   # None: DEFAULT_TEMPORAL_WEIGHT of the weights' convention
    flow: str = "dis"
    first_iters: Optional[int] = None     # None: the config's iters x 2.5
    warm_start: bool = True
    frames: Optional[Tuple[Optional[int], Optional[int]]] = None    # [A, B) of the source frames
    fps: Optional[float] = None
    crf: int = 18

    def check(self) -> None:
        if self.temporal_weight is not None and not (math.isfinite(self.temporal_weight)
                                                     and self.temporal_weight >= 0):
            raise ConfigError(f"--temporal-weight must be a finite number >= 0, got {self.temporal_weight}")
        if self.flow not in flowmod.FLOW_METHODS:
            raise ConfigError(f"--flow must be one of {', '.join(flowmod.FLOW_METHODS)}, got {self.flow!r}")
        if self.first_iters is not None and self.first_iters < 0:
            raise ConfigError(f"--first-iters must be >= 0, got {self.first_iters}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"--fps must be a positive number, got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"--crf must be from 0 to 51, got {self.crf}")


def parse_frames(text: str) -> Tuple[Optional[int], Optional[int]]:
    """``A:B`` (either may be empty) -> (A, B): source frames A..B-1, 0-based."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0].strip() else None
        b = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise ConfigError(f"--frames takes A:B (source frames A to B-1, 0-based; either may be empty), got {text!r}") from None
    if (a is not None and a < 0) or (b is not None and b < 0) or (a is not None and b is not None and b <= a):
        raise ConfigError(f"--frames A:B needs 0 <= A < B, got {text!r}")
    return a, b


@dataclass(frozen=True)
class VideoPlan:
    """Which source frames are stylised, at which size and rate."""

    info: vio.VideoInfo
    source_frames: Tuple[int, ...]        # source frame index of each output frame
    fps: Fraction
    size_hw: Tuple[int, int]
    audio_span: Tuple[float, float]       # seconds of the source the output covers


def plan_video(info: vio.VideoInfo, config: StyleConfig, settings: VideoSettings) -> VideoPlan:
    a, b = settings.frames or (None, None)
    a = 0 if a is None else a
    b = info.frames if b is None else min(b, info.frames)
    if a >= info.frames:
        raise ConfigError(f"--frames starts at {a} but {info.path} has {info.frames} frames (0 to {info.frames - 1})")
    src_fps = info.fps
    if settings.fps is None:
        frames = tuple(range(a, b))
        fps = src_fps
    else:
        fps = Fraction(settings.fps).limit_denominator(1001)
        if fps > src_fps:
            raise ConfigError(f"--fps {settings.fps:g} is above the video's {float(src_fps):g} fps; "
                              "stylegrad video only drops frames")
        n = int(math.floor((b - a) * fps / src_fps + 1e-9))
        frames = tuple(a + int(math.floor(k * src_fps / fps + 1e-9)) for k in range(max(1, n)))
    span = (a / float(src_fps), a / float(src_fps) + len(frames) / float(fps))
    return VideoPlan(info, frames, fps, vio.work_size(info, config.size), span)


def estimate_memory(plan: VideoPlan, config: StyleConfig, style_hw, backend: str) -> memory.MemoryEstimate:
    """Peak memory of one frame's optimisation (``stylegrad.run.memory``) plus what the video job
    keeps: the decoded source frame and, at the working size, the previous content and
    stylised frames, the warp, the flows and the weight."""
    h, w = plan.size_hw
    est = memory.estimate_run(config, plan.size_hw, 1, style_hw, (plan.info.height, plan.info.width), backend)
    extra = h * w * (4 * 3 * 4 + 2 * 4 * 2 + 4) + plan.info.width * plan.info.height * 3 * 2
    parts = dict(est.parts)
    parts["video frames and flow"] = extra
    return memory.MemoryEstimate(est.total + extra, parts)


@dataclass
class FrameEvent:
    """What the job reports to its caller: ``kind`` "start" (a frame begins), "iter" (an
    iteration: ``progress``), "done" (a frame finished: ``record``), "skip" (done before)."""

    kind: str
    frame: int
    frames: int
    progress: object = None
    record: Optional[dict] = None


@dataclass
class VideoJobResult:
    output: str
    codec: str
    frames: int
    done_before: int
    seconds: float
    records: List[dict] = field(default_factory=list)


def _hash_settings(config: StyleConfig, settings: VideoSettings, plan: VideoPlan, input_sha: str,
                   style_shas: List[str], device_type: str) -> Dict:
    s = pixel_settings(config, device_type, torch.get_num_threads() if device_type == "cpu" else None)
    s.update({"video_input_sha256": input_sha, "styles_sha256": style_shas,
              "temporal_weight": settings.temporal_weight, "flow": settings.flow,
              "first_iters": settings.first_iters, "warm_start": settings.warm_start,
              "source_frames": [plan.source_frames[0], plan.source_frames[-1], len(plan.source_frames)],
              "fps": str(plan.fps), "size_hw": list(plan.size_hw)})
    return s


def frame_name(k: int) -> str:
    return f"{FRAMES_DIR}/{k:06d}.png"


def _to_u8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _from_u8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0


def done_frames(job_dir: Path, chash: str, n: int) -> int:
    """How many leading frames are finished for these settings (ok record, PNG on disk with
    the recorded hash)."""
    state = load_state(job_dir)
    latest: Dict[int, dict] = {}
    for rec in state.images:
        if rec.get("config_hash") == chash and isinstance(rec.get("frame"), int):
            latest[rec["frame"]] = rec
    k = 0
    while k < n:
        rec = latest.get(k)
        if rec is None or rec.get("status") != "ok":
            break
        p = job_dir / frame_name(k)
        if not p.is_file() or file_sha256(p) != rec.get("output_sha256"):
            break
        k += 1
    return k


def prepare_job_dir(job_dir: Path, resume: bool, force: bool) -> None:
    """Refuse a folder holding another job unless ``resume``/``force``; ``force`` clears our
    manifest and frames (nothing else) before the run."""
    if job_dir.exists() and not job_dir.is_dir():
        raise ConfigError(f"job folder {job_dir} is a file")
    m = manifest_path(job_dir)
    if m.exists() and not (resume or force):
        raise ConfigError(f"{job_dir} already holds a video job: --resume to continue it, --force to start over")
    if force and m.exists():
        frames = job_dir / FRAMES_DIR
        if frames.is_dir():
            for p in frames.glob("*.png"):
                p.unlink()
        m.unlink()


def run_video_job(stylizer, plan: VideoPlan, settings: VideoSettings, output: Path, job_dir: Path,
                  styles: List[str], resume: bool = False, keep_frames: Optional[Path] = None,
                  on_event: Optional[Callable[[FrameEvent], None]] = None) -> VideoJobResult:
    """Stylise ``plan``'s frames into ``job_dir`` (resuming when asked), then encode ``output``.

    ``stylizer``: a :class:`~stylegrad.Stylizer` with its styles set and ``size`` equal to the
    plan's longest side. Raises :class:`RunFailedError` when a frame diverges or stalls (the
    frames before it stay done)."""
    cfg = stylizer.config
    if settings.temporal_weight is None:
        settings = dataclasses.replace(settings, temporal_weight=DEFAULT_TEMPORAL_WEIGHT[cfg.preprocess])
    t0 = time.time()
    n = len(plan.source_frames)
    input_sha = file_sha256(plan.info.path)
    style_shas = [file_sha256(s) for s in styles]
    psettings = _hash_settings(cfg, settings, plan, input_sha, style_shas, stylizer.device.type)
    chash = settings_hash(psettings)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / FRAMES_DIR).mkdir(exist_ok=True)
    records: List[dict] = []
    with ManifestWriter(job_dir) as manifest:
        state = load_state(job_dir)
        last = state.last_run
        if resume and last is not None and last.get("config_hash") != chash:
            diff = differing(last.get("settings") or {}, psettings)
            raise ConfigError(f"{job_dir} holds a job with other settings ({', '.join(diff[:4]) or 'input'}); "
                              "--force to start over")
        start = done_frames(job_dir, chash, n) if resume else 0
        run_id = uuid.uuid4().hex[:12]
        name = os.path.abspath(plan.info.path)
        manifest.append({"kind": "run", "run": run_id, "started": round(t0, 3), "video": True,
                         "settings": psettings, "config_hash": chash,
                         "inputs": [f"{name}#frame={i}" for i in plan.source_frames],
                         "outputs": [frame_name(k) for k in range(n)], "resume": resume,
                         "styles": [os.path.abspath(s) for s in styles], "host": socket.gethostname(),
                         "stylegrad": __version__, "torch": torch.__version__})
        for k in range(start):
            if on_event:
                on_event(FrameEvent("skip", k, n))
        first_iters = settings.first_iters if settings.first_iters is not None else int(round(cfg.iters * 2.5))
        prev_content: Optional[np.ndarray] = None
        prev_styled: Optional[torch.Tensor] = None
        wanted = plan.source_frames[max(0, start - 1):]
        pos = {src: k for k, src in enumerate(plan.source_frames)}
        h, w = plan.size_hw
        for src, rgb in vio.read_frames(plan.info, wanted):
            k = pos[src]
            content = imgs.resize(_from_u8(rgb), h, w) if rgb.shape[:2] != (h, w) else _from_u8(rgb)
            content_u8 = _to_u8(content)
            if k < start:                               # the frame before the resume point
                prev_content = content_u8
                prev_styled = _from_u8(np.asarray(imgs.tensor_to_pil(imgs.load_image(job_dir / frame_name(k)))))
                continue
            if on_event:
                on_event(FrameEvent("start", k, n))
            t_frame = time.perf_counter()
            init, term, kept = None, None, None
            if prev_styled is not None:
                backward, weight = flowmod.flows_and_weight(prev_content, content_u8, settings.flow)
                warped = flowmod.warp(prev_styled, backward)
                wt = torch.from_numpy(weight)
                kept = float(weight.mean())
                if settings.warm_start:
                    init = warm_start(warped, content, wt)[None]
                if settings.temporal_weight > 0:
                    term = TemporalTerm(warped, wt, settings.temporal_weight)
            iters = first_iters if (k == 0 or not settings.warm_start) else cfg.iters
            cb = (lambda p, k=k: on_event(FrameEvent("iter", k, n, p))) if on_event else None
            result = stylizer.run_batch([content], callback=cb, names=[f"frame {k + 1}/{n}"], init=init,
                                        pixel_term=term, iters=iters)[0]
            if result.status != "ok":
                raise RunFailedError(f"frame {k + 1} of {n} (source frame {src}): {result.message}", result)
            styled_u8 = _to_u8(result.image)
            out_png = job_dir / frame_name(k)
            imgs.save_image(_from_u8(styled_u8), out_png)
            styled = _from_u8(styled_u8)
            werr = None
            if prev_styled is not None:
                werr = flowmod.warping_error(styled, prev_styled, backward, weight)
            last_p = result.history[-1]
            rec = {"kind": "image", "input": f"{name}#frame={src}", "frame": k, "source_frame": src,
                   "config_hash": chash, "output": frame_name(k), "output_sha256": file_sha256(out_png),
                   "status": "ok", "seconds": round(time.perf_counter() - t_frame, 3), "iters": iters,
                   "loss": last_p.loss, "content": last_p.content, "style": last_p.style,
                   "temporal": last_p.pixel_term, "warping_error": werr, "flow_kept": kept,
                   "backend": stylizer.backend_name, "device": str(stylizer.device), "finished": now(),
                   "run": run_id}
            rec = finite_or_null(rec)   # the record is also passed on (events, the summary): null there too
            manifest.append(rec)
            records.append(rec)
            if on_event:
                on_event(FrameEvent("done", k, n, record=rec))
            prev_content, prev_styled = content_u8, styled
        finished = done_frames(job_dir, chash, n)
        if finished != n:
            raise StyleGradError(f"{plan.info.path}: only {finished} of {n} frames could be decoded")
        if keep_frames is not None:
            keep_frames.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                data = (job_dir / frame_name(k)).read_bytes()
                atomic_write(keep_frames / f"{k:06d}.png", lambda f, d=data: f.write(d))
        pngs = (np.asarray(imgs.tensor_to_pil(imgs.load_image(job_dir / frame_name(k)))) for k in range(n))
        codec = vio.write_video(output, pngs, plan.fps, plan.size_hw, audio_from=plan.info,
                                audio_span=plan.audio_span, crf=settings.crf)
        manifest.append({"kind": "end", "run": run_id, "finished": now(), "ok": n - start, "failed": 0,
                         "skipped": start, "output": str(output), "codec": codec,
                         "wall_seconds": round(time.time() - t0, 3)})
    return VideoJobResult(str(output), codec, n, start, time.time() - t0, records)
