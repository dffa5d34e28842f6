"""Synthetic clips for the video tests: ``stylegrad.video.example`` makes them (a still panned by
a known number of pixels per frame, optionally with audio, a rotation or uneven time stamps);
this module adds what only the tests need."""
from __future__ import annotations

from typing import List

from stylegrad.video.example import panned_frames, write_clip  # noqa: F401  (re-exported for the tests)


def audio_packets(path) -> List[bytes]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
