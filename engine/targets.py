"""Content and style targets: P (features of the photo) and A (Gram matrices of the paintings)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence

import torch

from .errors import ConfigError

FeatureFn = Callable[[torch.Tensor, Sequence[str]], Dict[str, torch.Tensor]]


@dataclass
class Targets:
    content: Dict[str, torch.Tensor]   # layer -> P, (B or 1, C, H, W)
    style: Dict[str, torch.Tensor]     # layer -> A, (B or 1, C, C), float32


def content_targets(features: FeatureFn, content: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in features(content, layers).items()}


def style_targets(features: FeatureFn, gram: Callable[[torch.Tensor], torch.Tensor],
                  styles: Sequence[torch.Tensor], blend: Sequence[float],
                  layers: Sequence[str], content_positions: Dict[str, int]) -> Dict[str, torch.Tensor]:
    """Blend of the paintings' Gram matrices at each style layer.

    Differs from the paper, which used a painting of the photo's size: when a painting's
    feature map has M_s positions and the generated image's has M, its Gram matrix is scaled by
    M / M_s, the Gram matrix the same statistics would give at the generated image's size.
    ``gram`` maps (B, C, M) to (B, C, C). ``content_positions`` names the layers present for the generated image (an image too small
    for a pooling stage has no deeper layers) with their M.
    """
    total = float(sum(blend))
    out: Dict[str, torch.Tensor] = {}
    for img, w in zip(styles, blend):
        feats = features(img, [l for l in layers if l in content_positions])
        for layer, M in content_positions.items():
            if layer not in layers:
                continue
            if layer not in feats:
                raise ConfigError(f"a style image of {img.shape[-1]}x{img.shape[-2]} px is too small for layer "
                                  f"{layer}: raise --style-scale or --size")
            f = feats[layer].detach()
            Ms = f.shape[-1] * f.shape[-2]
            g = gram(f.reshape(f.shape[0], f.shape[1], -1)).float() * (M / Ms) * (w / total)
            out[layer] = g if layer not in out else out[layer] + g
    return out
