"""Synthetic clips for the video tests, made with PyAV: a still panned by a known number of
pixels per frame, optionally with a sine-tone AAC audio track, a display rotation or uneven
time stamps (a variable frame rate)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[1] / "engine" / "examples" / "content.png"


def panned_frames(n: int, width: int, height: int, dx: int = 2, dy: int = 0, still: Path = EXAMPLE) -> List[np.ndarray]:
    """n crops (H, W, 3) uint8 of the still (resized so the crops fit), moving by (dx, dy)
    pixels per frame: content at x in frame t is at x + dx in frame t + 1... i.e. the window
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
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
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


def audio_packets(path) -> List[bytes]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
