"""Coarse-to-fine scales (``--min-size``): which sizes a run optimises at, and how one scale's
result starts the next.

As crowsonkb/style-transfer-pytorch does (not in the paper, which optimises at one size): the
sizes are ``size / sqrt(2)**k`` for k = 0, 1, 2, ..., rounded, from the smallest that is not below
``min_size`` up to ``size``, so consecutive scales differ by a factor sqrt(2) and the last is
exactly ``size``. The first scale starts from ``--init``; every later one from the previous
scale's result, upsampled (Lanczos, clamped to [0, 1]). Each scale runs ``iters`` iterations,
the last ``iters_last`` when given (the largest scale costs the most per iteration). Style
targets are rebuilt for each size (``TargetBuilder`` caches them per size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch

from stylegrad.config import StyleConfig
from stylegrad.io import images as imgs

SCALE_FACTOR = math.sqrt(2.0)


@dataclass(frozen=True)
class Scale:
    index: int      # 1-based
    count: int      # how many scales the run has
    size: int       # longest side at this scale
    iters: int

    @property
    def is_last(self) -> bool:
        return self.index == self.count


def scale_sizes(size: int, min_size=None) -> Tuple[int, ...]:
    """Longest sides, smallest first; ``(size,)`` when ``min_size`` is None or >= size."""
    if min_size is None or min_size >= size:
        return (size,)
    sizes = []
    k = 0
    while True:
        s = round(size / SCALE_FACTOR ** k)
        if s < min_size or s < 1:
            break
        if not sizes or s != sizes[-1]:
            sizes.append(s)
        k += 1
    return tuple(reversed(sizes))


def plan(config: StyleConfig) -> Tuple[Scale, ...]:
    """The scales of a run of ``config``, smallest first."""
    sizes = scale_sizes(config.size, config.min_size)
    n = len(sizes)
    last_iters = config.iters if config.iters_last is None else config.iters_last
    return tuple(Scale(i + 1, n, s, last_iters if i == n - 1 else config.iters) for i, s in enumerate(sizes))


def upsample(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A batch (B, 3, h, w) clamped to [0, 1] and resized to (B, 3, height, width) (Lanczos,
    per image, on the CPU; back on x's device)."""
    out = [imgs.resize(xb.detach().float().clamp(0, 1).cpu().contiguous(), height, width) for xb in x]
    return torch.stack(out).to(x.device)
