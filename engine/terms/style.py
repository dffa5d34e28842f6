"""The style term: sum (G - A)^2 / (4 N^2 M^2) per style layer (Gatys et al. 2016, eq. 4), times
``style_weight`` and the layer's weight, G = F F^T of the image's features F (N x M), A the
paintings' blended Gram matrix (``Targets.style``, made by ``stylegrad.terms.targets``).
d/dF = (G - A) F / (N^2 M^2) (G, A symmetric)."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from stylegrad.terms import losses
from stylegrad.terms.base import Term


def as_bcm(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W) without a copy: a plain view for NCHW tensors, a transposed
    view of the (B, H*W, C) storage for channels-last ones."""
    B, C, H, W = f.shape
    if f.is_contiguous():
        return f.reshape(B, C, H * W)
    if f.is_contiguous(memory_format=torch.channels_last):
        return f.permute(0, 2, 3, 1).reshape(B, H * W, C).transpose(1, 2)
    return f.reshape(B, C, H * W)


def as_nchw_like(g: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`as_bcm`: (B, C, M) back to f's shape and layout, no copy."""
    B, C, H, W = f.shape
    if not g.is_contiguous() and g.transpose(1, 2).is_contiguous():
        return g.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)
    return g.reshape(f.shape)


def gram_flops(layer_shapes: Dict[str, Tuple[int, int]], layers, batch: int, gram_symmetric: bool) -> float:
    """G = F F^T and D F at each of ``layers``: 2 N^2 M each (G halved when symmetric)."""
    total = 0.0
    for layer in layers:
        if layer in layer_shapes:
            n, m = layer_shapes[layer]
            total += 2.0 * n * n * m * (0.5 if gram_symmetric else 1.0) + 2.0 * n * n * m
    return total * batch


class StyleTerm(Term):
    name = "style"
    column = "style"
    config_fields = ("style_weight", "style_layers", "style_layer_weights", "style_blend_weights", "style_scale")
    kernel_ops = ("gram", "style_loss", "style_feature_grad")

    def layers(self) -> Dict[str, float]:
        return self.config.active_style_layers()

    def value_and_grad(self, feats, targets, ops) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        from stylegrad.terms.gradnorm import l1_normalized

        cfg = self.config
        any_f = next(iter(feats.values()))
        value = torch.zeros(any_f.shape[0], dtype=torch.float32, device=any_f.device)
        grads: Dict[str, torch.Tensor] = {}
        for layer, w in self.layers().items():
            if layer not in feats:
                continue
            f = feats[layer]
            N, M = f.shape[1], f.shape[2] * f.shape[3]
            fv = as_bcm(f)
            scale = cfg.style_weight * w / float(N * N * M * M)
            loss, D = ops.style_loss(ops.gram(fv), targets.style[layer], scale / 4.0, scale)
            value = value + loss
            d = ops.style_feature_grad(D, fv)
            if cfg.normalize_gradients:
                d = l1_normalized(d, cfg.style_weight * w)
            grads[layer] = as_nchw_like(d, f)
        return value, grads

    def reference_value(self, feature, feats, image, targets):
        total = None
        for layer, w in self.layers().items():
            if layer in feats:
                sw = self.config.style_weight * w
                v = sw * losses.style_layer_loss(feature(layer, sw), targets.style[layer])
                total = v if total is None else total + v
        return total

    def flops(self, layer_shapes, batch=1, gram_symmetric=False) -> float:
        return gram_flops(layer_shapes, self.config.style_layers, batch, gram_symmetric)
