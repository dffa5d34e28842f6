"""Reading and writing videos with PyAV (FFmpeg's libraries in its wheels).

Reading (:func:`probe`, :func:`read_frames`): any container and codec the wheel's FFmpeg
decodes. :func:`probe` looks at the whole file before any work (demuxing only, no decoding
except the first frame) and refuses, with :class:`~stylegrad.errors.VideoError`: a file FFmpeg
cannot open, one without a video stream, one with zero frames, a variable frame rate (the
packets' time stamps are not evenly spaced), and a codec the wheel cannot decode. Rotation
metadata (the display matrix) is honoured: frames come out the way players show them, and the
size reported is the displayed one.

Writing (:func:`write_video`): H.264 (``libx264``) when the wheel has that encoder, else MPEG-4
part 2 (the codec used is returned so the caller can say it); VP9 for ``.webm``. 4:2:0 chroma,
so frame sides are even (:func:`work_size`). The audio streams of the source are copied
unchanged (packets remuxed, no re-encoding), cut to the frames' time span. The file is written
to a temporary name and renamed (``stylegrad.io.fileio.atomic_path``): nothing partial is ever seen
at the output path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np

from stylegrad.errors import VideoError, first_line
from stylegrad.video import require

# container formats by output extension, and the video codecs tried for each (first available)
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
VIDEO_CODECS = {"webm": ("libvpx-vp9",), "avi": ("mpeg4",)}
DEFAULT_CODECS = ("libx264", "mpeg4")
# time stamps may jitter by this fraction of a frame interval (rounding in the container's time
# base) before the rate counts as variable
VFR_TOLERANCE = 0.1


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found. ``width``/``height``: as displayed (after ``rotation``)."""

    path: str
    width: int
    height: int
    fps: Fraction
    frames: int
    rotation: int          # degrees counter-clockwise the decoded frames are turned to display
    codec: str
    audio_streams: int
    start_time: float      # seconds, of the video stream's first frame

    @property
    def duration(self) -> float:
        return self.frames / float(self.fps)

    def describe(self) -> str:
        rot = f", rotated {self.rotation} deg" if self.rotation else ""
        audio = f", {self.audio_streams} audio stream(s)" if self.audio_streams else ", no audio"
        return (f"{self.width}x{self.height} {self.codec}, {self.frames} frames at {_fps_text(self.fps)} fps"
                f"{rot}{audio}")


def _fps_text(fps: Fraction) -> str:
    return f"{float(fps):.3f}".rstrip("0").rstrip(".")


def _open(path: str):
    av = require("av")
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video not found: {path}")
    if p.is_dir():
        raise VideoError(f"expected a video file, got a folder: {path}")
    if not p.is_file():
        raise VideoError(f"{path} is not a regular file; only regular files are read")
    try:
        return av.open(str(p), "r")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path} is not a video FFmpeg can read ({_why(e)})") from None


def _why(e: Exception) -> str:
    """FFmpeg's reason (its strerror, without the errno and path) as one line."""
    return first_line(getattr(e, "strerror", None) or e) or type(e).__name__


def _rotation(frame) -> int:
    try:
        r = frame.rotation
    except Exception:
        return 0
    r = int(round((r or 0) / 90.0)) * 90 % 360
    return r


def probe(path: str) -> VideoInfo:
    """Look at a video before any work; refuse what :mod:`stylegrad.video.io` cannot take."""
    av = require("av")
    container = _open(path)
    try:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        tb = stream.time_base
        pts: List[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    pts.append(packet.pts)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: cannot read its packets ({_why(e)})") from None
        if not pts:
            raise VideoError(f"{path} has zero video frames")
        pts.sort()
        rate = _frame_rate(path, stream, pts, tb)
        # the first frame decodes (a codec the wheel lacks fails here, before any work)
        container.seek(0)
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: cannot decode its {codec} video with this FFmpeg ({_why(e)})") from None
        if first is None:
            raise VideoError(f"{path}: cannot decode its {codec} video with this FFmpeg (no frame came out)")
        rotation = _rotation(first)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        start = float(pts[0] * tb) if tb is not None else 0.0
        return VideoInfo(str(path), w, h, rate, len(pts), rotation, codec, len(container.streams.audio), start)
    finally:
        container.close()


def _frame_rate(path: str, stream, pts: List[int], tb) -> Fraction:
    """The constant frame rate, from the time stamps; VideoError for a variable one."""
    if len(pts) >= 3 and tb is not None:
        d = np.diff(np.asarray(pts, dtype=np.int64))
        if (d <= 0).any():
            raise VideoError(f"{path}: repeated video time stamps; cannot tell its frame rate")
        med = float(np.median(d))
        if float(np.abs(d - med).max()) > VFR_TOLERANCE * med + 1:
            lo, hi = float(d.min() * tb), float(d.max() * tb)
            raise VideoError(f"{path} has a variable frame rate (frames {lo * 1e3:.1f} to {hi * 1e3:.1f} ms apart); "
                             "convert it to a constant rate first (ffmpeg -i IN -vf fps=30 OUT)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if len(pts) >= 2 and tb is not None:
        measured = Fraction((len(pts) - 1), 1) / (Fraction(pts[-1] - pts[0]) * tb)
        rate = measured.limit_denominator(1001) if not rate else rate
    if not rate or rate <= 0:
        raise VideoError(f"{path}: cannot tell its frame rate")
    return Fraction(rate)


def read_frames(info: VideoInfo, indices: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """Decode the video's frames in order, upright (rotation applied), as (index, (H, W, 3)
    uint8 RGB). ``indices``: the frame numbers wanted (increasing; default all)."""
    av = require("av")
    wanted = None if indices is None else iter(sorted(set(indices)))
    nxt = None if wanted is None else next(wanted, None)
    if wanted is not None and nxt is None:
        return
    container = _open(info.path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if wanted is not None:
                    if i < nxt:
                        continue
                rgb = frame.to_ndarray(format="rgb24")
                if info.rotation:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=info.rotation // 90))
                yield i, rgb
                if wanted is not None:
                    nxt = next(wanted, None)
                    if nxt is None:
                        return
        except av.error.FFmpegError as e:
            raise VideoError(f"{info.path}: decoding failed at frame {i + 1} ({_why(e)})") from None
    finally:
        container.close()


def work_size(info: VideoInfo, size: int) -> Tuple[int, int]:
    """(height, width) the frames are stylised and written at: the longest side ``size`` (never
    larger than the source), each side rounded down to even (4:2:0 chroma needs it)."""
    longest = min(size, max(info.width, info.height))
    s = longest / max(info.width, info.height)
    h = max(2, int(round(info.height * s)) // 2 * 2)
    w = max(2, int(round(info.width * s)) // 2 * 2)
    return h, w


def container_format(path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in CONTAINERS:
        raise VideoError(f"output {path}: unknown video extension {ext or '(none)'}; use one of "
                         + ", ".join(CONTAINERS))
    return CONTAINERS[ext]


def choose_codec(fmt: str) -> str:
    """The first video encoder this wheel has for the container format."""
    av = require("av")
    for name in VIDEO_CODECS.get(fmt, DEFAULT_CODECS):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise VideoError(f"this FFmpeg (PyAV {av.__version__}) has no encoder for .{fmt} video")


def write_video(path, frames: Iterable[np.ndarray], fps: Fraction, size_hw: Tuple[int, int],
                audio_from: Optional[VideoInfo] = None, audio_span: Optional[Tuple[float, float]] = None,
                crf: int = 18) -> str:
    """Encode ``frames`` ((H, W, 3) uint8 RGB, ``size_hw``) at ``fps`` into ``path``
    atomically, with ``audio_from``'s audio streams copied for the time span ``audio_span``
    (seconds in the source, default all). Returns the video codec used."""
    av = require("av")
    from stylegrad.io.fileio import atomic_path

    fmt = container_format(path)
    codec = choose_codec(fmt)
    h, w = size_hw
    rate = Fraction(fps).limit_denominator(100000)
    with atomic_path(path) as tmp:
        out = av.open(str(tmp), "w", format=fmt)
        src = None
        try:
            vs = out.add_stream(codec, rate=rate)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            if codec in ("libx264", "libvpx-vp9"):
                vs.options = {"crf": str(crf)} if codec == "libx264" else {"crf": str(crf + 13), "b": "0"}
            else:
                vs.options = {"qscale": "3"}
            audio: List = []
            if audio_from is not None and audio_from.audio_streams:
                src = _open(audio_from.path)
                for a in src.streams.audio:
                    try:
                        audio.append((a, out.add_stream_from_template(a)))
                    except Exception as e:
                        raise VideoError(f"cannot copy the {a.codec_context.name} audio into .{fmt} ({_why(e)}); "
                                         "use .mkv") from None
            packets = _audio_packets(src, audio, audio_span) if audio else iter(())
            pending = next(packets, None)
            for k, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = k
                frame.time_base = Fraction(1) / rate
                t_video = k / float(rate)
                while pending is not None and pending[0] <= t_video:
                    _mux(out, pending[1], fmt)
                    pending = next(packets, None)
                for p in vs.encode(frame):
                    out.mux(p)
            for p in vs.encode(None):
                out.mux(p)
            while pending is not None:
                _mux(out, pending[1], fmt)
                pending = next(packets, None)
        finally:
            out.close()
            if src is not None:
                src.close()
    return codec


def _mux(out, packet, fmt):
    try:
        out.mux(packet)
    except Exception as e:
        raise VideoError(f"cannot copy the audio into .{fmt} ({_why(e)}); use .mkv") from None


def _audio_packets(src, pairs, span):
    """(time in the output, packet) of the source's audio in order, shifted so that ``span``'s
    start is 0 and cut to ``span``."""
    streams = {a.index: o for a, o in pairs}
    start, stop = span if span is not None else (0.0, math.inf)
    for packet in src.demux([a for a, _ in pairs]):
        if packet.size == 0 or packet.pts is None:
            continue
        tb = packet.time_base
        t = float(packet.pts * tb)
        if (start > 0 and t < start - 1e-6) or t >= stop - 1e-6:
            continue
        shift = int(round(start / tb))
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = streams[packet.stream.index]
        yield t - start, packet
