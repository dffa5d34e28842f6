"""Losses and their gradients with respect to the features, from ``stylegrad.kernels``.

This is the middle step of every hand-written backend:
    features -> (weighted content loss, weighted style loss, d loss / d features)

Gradients (F of shape (N, M) at one layer, G = F F^T, A the target):
    d/dF [1/2 sum (F-P)^2]                 = F - P
    d/dF [sum (G-A)^2 / (4 N^2 M^2)]       = (G - A) F / (N^2 M^2)     (G, A symmetric)

With ``normalize_gradients`` each term's feature gradient is then L1-normalised and scaled by
the term's weight (``stylegrad.gradnorm``: a heuristic, not the gradient of the loss).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from .config import StyleConfig
from .targets import Targets


def _as_bcm(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W) without a copy: a plain view for NCHW tensors, a transposed
    view of the (B, H*W, C) storage for channels-last ones."""
    B, C, H, W = f.shape
    if f.is_contiguous():
        return f.reshape(B, C, H * W)
    if f.is_contiguous(memory_format=torch.channels_last):
        return f.permute(0, 2, 3, 1).reshape(B, H * W, C).transpose(1, 2)
    return f.reshape(B, C, H * W)


def _as_nchw_like(g: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_as_bcm`: (B, C, M) back to f's shape and layout, no copy."""
    B, C, H, W = f.shape
    if not g.is_contiguous() and g.transpose(1, 2).is_contiguous():
        return g.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)
    return g.reshape(f.shape)


def feature_losses_and_grads(
    feats: Dict[str, torch.Tensor], targets: Targets, config: StyleConfig, ops=None
) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """Weighted content loss (B,), weighted style loss (B,), and per-layer feature gradients.

    Layers absent from ``feats`` (image too small for them) contribute nothing. ``ops`` is
    where the kernels come from: ``stylegrad.kernels`` (default) or the CUDA backend's.
    """
    kernels = ops
    if kernels is None:
        from stylegrad import kernels

    from .gradnorm import l1_normalized

    normalize = config.normalize_gradients
    any_f = next(iter(feats.values()))
    B = any_f.shape[0]
    content = torch.zeros(B, dtype=torch.float32, device=any_f.device)
    style = torch.zeros(B, dtype=torch.float32, device=any_f.device)
    grads: Dict[str, torch.Tensor] = {}

    def add(layer: str, g: torch.Tensor) -> None:
        grads[layer] = g if layer not in grads else grads[layer] + g

    for layer, w in config.active_content_layers().items():
        if layer not in feats:
            continue
        loss, g = kernels.content_loss(feats[layer], targets.content[layer])
        scale = config.content_weight * w
        content = content + scale * loss
        add(layer, l1_normalized(g * scale, scale) if normalize else g * scale)
    for layer, w in config.active_style_layers().items():
        if layer not in feats:
            continue
        f = feats[layer]
        N, M = f.shape[1], f.shape[2] * f.shape[3]
        fv = _as_bcm(f)
        scale = config.style_weight * w / float(N * N * M * M)
        loss, D = kernels.style_loss(kernels.gram(fv), targets.style[layer], scale / 4.0, scale)
        style = style + loss
        d = kernels.style_feature_grad(D, fv)
        if normalize:
            d = l1_normalized(d, config.style_weight * w)
        add(layer, _as_nchw_like(d, f))
    return content, style, grads


def tv_loss_and_grad(image: torch.Tensor, config: StyleConfig, ops=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    kernels = ops
    if kernels is None:
        from stylegrad import kernels

    if config.tv_weight == 0:   # no gradient term: callers add nothing
        return torch.zeros(image.shape[0], device=image.device), None
    if config.tv_norm == "l1":   # backends whose kernels lack it refuse --tv-norm l1 when built
        loss, g = kernels.tv_l1_loss(image)
    else:
        loss, g = kernels.tv_loss(image)
    return loss * config.tv_weight, g * config.tv_weight


def add_pixel_term(ev, image: torch.Tensor, pixel_term):
    """``ev`` (an Evaluation of ``image``) with an extra pixel-space term: its value goes to
    ``ev.pixel_term`` (summed with one already there) and its gradient to ``ev.grad``. The
    term is ``x -> (weighted value (B,), gradient (B, 3, H, W))``, e.g.
    ``stylegrad.video.temporal.TemporalTerm``; like TV it needs no backward through the network."""
    import dataclasses

    value, grad = pixel_term(image)
    value = value.to(ev.content.dtype)
    if ev.pixel_term is not None:
        value = value + ev.pixel_term
    return dataclasses.replace(ev, grad=ev.grad + grad.to(ev.grad.dtype), pixel_term=value)
