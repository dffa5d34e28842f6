"""Peak memory of a run, estimated before it starts, and the memory (and CPU cores,
:func:`usable_cores`) there is for it.

:func:`estimate_run` adds up, for a batch of B images of P = h x w output pixels each:

``weights``     conv parameters x 4 B x ``WEIGHT_COPIES`` (the fp32 VGG as loaded, the
                backend's copy in its layout and precision, oneDNN's reordered copy), plus the
                backend's fixed overhead (``FIXED_BYTES``: allocator and ONNX Runtime arenas).
``evaluation``  per pixel per image, what one forward + backward holds at its peak: the
                loss-layer features, what the backward needs (``stylegrad.terms.backward``'s masks,
                160 B/px with the default layers and average pooling, 70 B/px with max; for
                ``reference`` autograd's saved tensors, 1292 / 1532 B/px), and the transient
                full-resolution activations (``TRANSIENT``: a count of 64-channel activations
                at the backend's precision, measured).
``optimiser``   L-BFGS: its preallocated history, 2 x (history + 1) x 3 x 4 B per pixel (s and
                y pairs and one discard slot: 2424 B/px at history 100) plus 2 image vectors;
                Adam: 3 image vectors.
``images``      the image, the initial image, the content, the gradient, a snapshot:
                5 x 12 B per pixel.
``targets``     the forward that builds the targets (content and every style image at its
                scaled size, ``--style-scale``): features and transients without the backward,
                the phase before the optimisation (the larger of the two phases counts).
``decoded``     every image as read from its file, 12 B per source pixel (float32 RGB), plus
                ``DECODE_EXTRA`` bytes per source pixel while it is decoded.

The per-pixel constants were measured on the 2-core development CPU (torch 2.13, oneDNN) with
``bench/memory_check.py``, which prints the estimate next to the measured peak RSS; the README
(*Reliability*) gives the comparison. On CUDA the same counts are used against the free GPU
memory; cuDNN's workspace is not in them (*not measured on a GPU*).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch

from stylegrad.config import StyleConfig
from stylegrad.errors import MemoryLimitError
from stylegrad.io import images as imgs
from stylegrad.io.images import DECODE_BYTES, DECODE_EXTRA
from stylegrad.model.vgg import layer_channels, layer_specs
from stylegrad.system import available_bytes, usable_cores  # noqa: F401  (re-exported: they lived here)
from stylegrad.terms import backward as bw

WEIGHT_COPIES = 2.5
# measured (bench/memory_check.py): what a backend holds whatever the image size
FIXED_BYTES = {"torch": 40 << 20, "cuda": 40 << 20, "reference": 40 << 20, "onnxruntime": 160 << 20}
# transient full-resolution 64-channel activations alive at an evaluation's peak (forward +
# backward), measured at 256 and 768 px with the default layers (bench/memory_check.py)
TRANSIENT = {"torch": 6.5, "cuda": 6.5, "reference": 4.5, "onnxruntime": 21.0}
TRANSIENT_BF16 = 11.0      # torch in bf16 (measured at 512 px): some transients stay float32
# transient full-resolution activations of a forward without backward (target building)
TARGET_TRANSIENT = 3.0
IMAGE_VECTORS = 5          # x, x0, content, gradient, snapshot (float32 RGB each)
# DECODE_BYTES, DECODE_EXTRA: bytes per pixel of a decoded image and while decoding (stylegrad.io.images)
RGB32 = 12                 # bytes per pixel of a float32 RGB image


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of a run (``total``) and what they are made of (``parts``)."""

    total: int
    parts: Dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return f"{_gib(self.total)} (" + ", ".join(f"{k} {_gib(v)}" for k, v in big if v >= self.total / 50) + ")"


def _area(model: str, layer: str) -> float:
    """Fraction of the input's pixels a layer's feature map has (1 / 4 per pool before it)."""
    return 0.25 ** bw.pools_before(model, layer)


def feature_bytes_per_pixel(model: str, layers: Sequence[str], elem: int = 4) -> float:
    """Bytes per input pixel of the features at ``layers``."""
    ch = layer_channels(model)
    return sum(ch[l] * _area(model, l) for l in set(layers)) * elem


def autograd_bytes_per_pixel(model: str, pool: str, layers: Sequence[str]) -> float:
    """What autograd saves for one forward up to the deepest of ``layers``: every ReLU output
    and every pool output in float32, the normalised input, and int64 indices per max-pool
    output (this reproduces the measured 1292 / 1532 B/px of ``stylegrad.terms.backward``'s doc)."""
    if not layers:
        return 0.0
    plan = bw.make_plan(model, pool, layers)
    floats, indices = 3.0, 0.0
    area = 1.0
    for s in plan.specs:
        if s.kind == "pool":
            area /= 4.0
            floats += s.out_channels * area
            if pool == "max":
                indices += s.out_channels * area
        elif s.kind == "relu":
            floats += s.out_channels * area
    return floats * 4 + indices * 8


def evaluation_bytes_per_pixel(config: StyleConfig, backend: str) -> float:
    """Bytes per output pixel (one image) one evaluation holds at its peak on ``backend``."""
    layers = config.loss_layers()
    elem = 2 if config.precision == "bf16" else 4
    full_res = 64 * elem
    if backend == "reference":
        kept = autograd_bytes_per_pixel(config.model, config.pool, layers)
    else:
        plan = bw.make_plan(config.model, config.pool, layers) if layers else None
        kept = feature_bytes_per_pixel(config.model, layers, elem) + (bw.planned_bytes_per_pixel(plan) if plan else 0)
    transient = TRANSIENT_BF16 if config.precision == "bf16" else TRANSIENT.get(backend, TRANSIENT["torch"])
    return kept + transient * full_res


def optimiser_bytes_per_pixel(config: StyleConfig) -> float:
    if config.optimizer == "lbfgs":
        return (2 * (config.lbfgs_history + 1) + 2) * RGB32
    return 3 * RGB32


def weights_bytes(model: str) -> int:
    params = sum(s.out_channels * (s.in_channels * 9 + 1) for s in layer_specs(model) if s.kind == "conv")
    return int(params * 4 * WEIGHT_COPIES)


def estimate_run(config: StyleConfig, size_hw: Tuple[int, int], batch: int = 1,
                 style_source_hw: Sequence[Tuple[int, int]] = (), content_source_hw: Optional[Tuple[int, int]] = None,
                 backend: str = "torch", include_weights: bool = True) -> MemoryEstimate:
    """Peak bytes of optimising ``batch`` images of ``size_hw`` (the output size, after
    ``--size``) with ``config`` on ``backend``: see the module docstring.

    ``style_source_hw``: each style image's size as read (its scaled size follows from
    ``style_scale``); ``content_source_hw``: one content image's size as read (decoded and
    resized one at a time). ``include_weights``: False when the weights and the style images
    are already in memory (only what the run adds is counted).
    """
    h, w = size_hw
    P = h * w
    elem = 2 if config.precision == "bf16" else 4
    parts: Dict[str, float] = {}
    if include_weights:
        parts["weights"] = weights_bytes(config.model) + FIXED_BYTES.get(backend, FIXED_BYTES["torch"])
    parts["images"] = IMAGE_VECTORS * RGB32 * P * batch
    decoded = sum(hh * ww for hh, ww in style_source_hw) * DECODE_BYTES if include_weights else 0
    if content_source_hw is not None:
        ch_, cw_ = content_source_hw
        decoded += ch_ * cw_ * (DECODE_BYTES + DECODE_EXTRA)
    parts["decoded inputs"] = decoded
    # target phase: the largest forward without backward (the content batch or a scaled style)
    longest = imgs.style_side(max(h, w), config.style_scale, config.resize_filter)
    style_px = [math.prod(imgs.scaled_size(hh, ww, longest, config.resize_filter))
                for hh, ww in style_source_hw] or [P]
    all_layers = config.loss_layers()
    fwd_px = feature_bytes_per_pixel(config.model, all_layers, elem) + TARGET_TRANSIENT * 64 * elem
    targets = max(P * batch, max(style_px)) * fwd_px
    optimisation = (evaluation_bytes_per_pixel(config, backend) + optimiser_bytes_per_pixel(config)) * P * batch
    if targets > optimisation:
        parts["style targets"] = targets
    else:
        parts["optimiser"] = optimiser_bytes_per_pixel(config) * P * batch
        parts["evaluation"] = evaluation_bytes_per_pixel(config, backend) * P * batch
    return MemoryEstimate(int(sum(parts.values())), {k: int(v) for k, v in parts.items()})


# -- what there is ----------------------------------------------------------------------------

def memory_limit(config: StyleConfig, device: Optional[torch.device] = None) -> Tuple[Optional[int], str]:
    """(bytes a run may use, where that number comes from): ``--max-memory`` when given,
    else the available memory of the device (None: unknown, no check)."""
    if config.max_memory is not None:
        return config.max_memory, "--max-memory"
    device = torch.device(device or config.device)
    where = "free GPU memory" if device.type == "cuda" else "available memory"
    return available_bytes(device), where


def check_fits(estimate: MemoryEstimate, config: StyleConfig, device: Optional[torch.device] = None,
               what: str = "this run") -> None:
    """Raise :class:`MemoryLimitError` when ``estimate`` is over the limit (see
    :func:`memory_limit`), with what to change."""
    limit, where = memory_limit(config, device)
    if limit is None or estimate.total <= limit:
        return
    hints = ["a smaller --size"]
    if "optimiser" in estimate.parts and config.optimizer == "lbfgs":
        hints.append("a smaller --lbfgs-history or --optimizer adam")
    if config.batch_size > 1:
        hints.append("a smaller --batch-size")
    if "style targets" in estimate.parts:
        hints.append("a smaller --style-scale")
    if config.max_memory is None:
        hints.append("--max-memory SIZE to set the limit yourself")
    raise MemoryLimitError(f"{what} would need about {estimate.describe()}, more than the {_gib(limit)} of "
                           f"{where}; use " + ", ".join(hints))
