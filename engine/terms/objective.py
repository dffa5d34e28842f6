"""Losses and their gradients with respect to the features, from ``stylegrad.kernels``.

This is the middle step of every hand-written backend:
    features -> (weighted content loss, weighted style loss, d loss / d features)
summed over the objective's feature terms (``stylegrad.terms``: each term owns its formula,
targets, gradient and FLOPs; the ones below are the content and style terms').

Gradients (F of shape (N, M) at one layer, G = F F^T, A the target):
    d/dF [1/2 sum (F-P)^2]                 = F - P
    d/dF [sum (G-A)^2 / (4 N^2 M^2)]       = (G - A) F / (N^2 M^2)     (G, A symmetric)

With ``normalize_gradients`` each term's feature gradient is then L1-normalised and scaled by
the term's weight (``stylegrad.terms.gradnorm``: a heuristic, not the gradient of the loss).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from stylegrad.config import StyleConfig
from stylegrad.terms.targets import Targets


# kept for callers of the old names: the layout helpers live with the style term
from stylegrad.terms.style import as_bcm as _as_bcm, as_nchw_like as _as_nchw_like  # noqa: E402,F401


def feature_losses_and_grads(
    feats: Dict[str, torch.Tensor], targets: Targets, config: StyleConfig, ops=None, terms=None
) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """Weighted content loss (B,), weighted style loss (B,), and per-layer feature gradients:
    the sum over the feature terms (``stylegrad.terms``) of each column.

    Layers absent from ``feats`` (image too small for them) contribute nothing. ``ops`` is
    where the kernels come from: ``stylegrad.kernels`` (default) or the CUDA backend's.
    ``terms``: the objective (``stylegrad.terms.build(config)`` when None).
    """
    kernels = ops
    if kernels is None:
        from stylegrad import kernels
    if terms is None:
        from stylegrad import terms as terms_mod

        terms = terms_mod.build(config)
    any_f = next(iter(feats.values()))
    B = any_f.shape[0]
    columns = {"content": torch.zeros(B, dtype=torch.float32, device=any_f.device),
               "style": torch.zeros(B, dtype=torch.float32, device=any_f.device)}
    grads: Dict[str, torch.Tensor] = {}
    for term in terms:
        if term.kind != "feature" or not term.active:
            continue
        value, g = term.value_and_grad(feats, targets, kernels)
        columns[term.column] = columns[term.column] + value
        for layer, d in g.items():
            grads[layer] = d if layer not in grads else grads[layer] + d
    return columns["content"], columns["style"], grads


def tv_loss_and_grad(image: torch.Tensor, config: StyleConfig, ops=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The TV term's weighted value (B,) and image gradient (None when its weight is 0)."""
    kernels = ops
    if kernels is None:
        from stylegrad import kernels
    from stylegrad.terms.tv import TVTerm

    return TVTerm(config).value_and_grad_pixels(image, kernels)


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
