"""Example clips with a known motion: a still panned by a whole number of pixels per frame,
encoded with PyAV (losslessly by default), optionally with a sine-tone AAC audio track, a display
rotation or uneven time stamps (a variable frame rate). The README's *Video* example and the
video tests make their clips with it.

As a command (the functions here never print)::

    python -m stylegrad.video.example clip.mp4 [--frames 20] [--width 256] [--height 192] [--pan 2] [--fps 10]

writes a clip panning over the bundled ``engine/examples/content.png`` (or ``--still IMAGE``).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from stylegrad.video import require

EXAMPLE_STILL = Path(__file__).resolve().parents[1] / "examples" / "content.png"


def panned_frames(n: int, width: int, height: int, dx: int = 2, dy: int = 0,
                  still: Path = EXAMPLE_STILL) -> List[np.ndarray]:
    """n crops (H, W, 3) uint8 of the still (resized so the crops fit), moving by (dx, dy)
    pixels per frame: content at x in frame t is at x + dx in frame t + 1, i.e. the window
    moves left, so the scene moves right by dx per frame."""
    img = Image.open(still).convert("RGB")
    need_w, need_h = width + abs(dx) * (n - 1), height + abs(dy) * (n - 1)
    s = max(need_w / img.width, need_h / img.height)
    img = img.resize((max(need_w, round(img.width * s)), max(need_h, round(img.height * s))), Image.LANCZOS)
    a = np.asarray(img)
    x0 = abs(dx) * (n - 1) if dx > 0 else 0
    y0 = abs(dy) * (n - 1) if dy > 0 else 0
    return [np.ascontiguousarray(a[y0 - t * dy: y0 - t * dy + height, x0 - t * dx: x0 - t * dx + width])
            for t in range(n)]


def write_clip(path, frames: Sequence[np.ndarray], fps: int = 10, audio: bool = False, rotation: int = 0,
               pts: Optional[Sequence[int]] = None, codec: str = "libx264", lossless: bool = True) -> Path:
    """Encode ``frames`` ((H, W, 3) uint8 RGB) into ``path`` atomically: H.264 lossless
    (yuv444p, qp 0) by default, ``lossless=False`` for crf 18 yuv420p; ``audio`` adds a
    440 Hz AAC tone as long as the clip, ``rotation`` a display rotation, ``pts`` the frames'
    time stamps in milliseconds (default: evenly spaced at ``fps``)."""
    av = require("av")
    from stylegrad.io.fileio import atomic_path
    from stylegrad.video.io import container_format

    path = Path(path)
    fmt = container_format(path)
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=fmt) as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv444p" if (codec == "libx264" and lossless) else "yuv420p"
        if codec == "libx264":
            vs.options = {"qp": "0"} if lossless else {"crf": "18"}
        if pts is not None:
            vs.time_base = Fraction(1, 1000)
            vs.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            vs.set_display_rotation(rotation)
        a_s = None
        if audio:
            a_s = out.add_stream("aac", rate=44100)
            a_s.layout = "mono"
        for k, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[k], Fraction(1, 1000)
            else:
                f.pts, f.time_base = k, Fraction(1, fps)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if a_s is not None:
            n = int(44100 * len(frames) / fps)
            t = np.arange(n) / 44100.0
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            step = 1024
            for i in range(0, n, step):
                af = av.AudioFrame.from_ndarray(samples[:, i:i + step], format="fltp", layout="mono")
                af.sample_rate, af.pts = 44100, i
                for p in a_s.encode(af):
                    out.mux(p)
            for p in a_s.encode(None):
                out.mux(p)
    return path


def main(argv=None) -> int:
    import argparse
    import sys

    from stylegrad.errors import StyleGradError

    ap = argparse.ArgumentParser(prog="python -m stylegrad.video.example",
                                 description="Write a short clip panning over a still (lossless H.264).")
    ap.add_argument("output", metavar="OUT", help="the clip to write (.mp4, .mkv, .mov)")
    ap.add_argument("--still", default=str(EXAMPLE_STILL), help="the image to pan over (default: the bundled photo)")
    ap.add_argument("--frames", type=int, default=20, help="number of frames (default %(default)s)")
    ap.add_argument("--width", type=int, default=256, help="frame width (default %(default)s)")
    ap.add_argument("--height", type=int, default=192, help="frame height (default %(default)s)")
    ap.add_argument("--pan", type=int, default=2, help="pixels per frame (default %(default)s)")
    ap.add_argument("--fps", type=int, default=10, help="frames per second (default %(default)s)")
    a = ap.parse_args(argv)
    if a.frames < 1 or a.width < 2 or a.height < 2 or a.fps < 1:
        ap.error("--frames and --fps must be at least 1, --width and --height at least 2")
    if Path(a.output).resolve() == Path(a.still).resolve():
        ap.error("the output would overwrite the still")
    try:
        frames = panned_frames(a.frames, a.width, a.height, dx=a.pan, still=Path(a.still))
        write_clip(a.output, frames, fps=a.fps)
    except (StyleGradError, OSError) as e:
        print(f"stylegrad: error: {e}", file=sys.stderr)
        return 2
    print(f"{a.output}: {a.frames} frames, {a.width}x{a.height}, {a.fps} fps, panning {a.pan} px/frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
