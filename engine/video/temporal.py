"""The temporal loss of Ruder et al. (2016) as a pixel-space term, and the warm start.

For frame t with ``w`` = the stylised frame t-1 warped by the backward flow and ``c`` the
reliability weight (0/1 per pixel, ``stylegrad.video.flow.consistency_weight``):

    L_temporal(x) = lambda * 1/D * sum_{k, i, j} c_ij (x_kij - w_kij)^2,   D = 3 H W
    dL/dx         = lambda * 2/D * c (x - w)

(per image of a batch, (B,)). It acts on the pixels, so it needs no backward through the
network: :class:`TemporalTerm` is a pixel :class:`~stylegrad.terms.base.Term`, the ``pixel_term``
a backend's ``optimize`` adds to every evaluation (``stylegrad.terms.objective.add_pixel_term``); it is
reported in the ``pixel`` column. Tested against autograd in float64.
"""
from __future__ import annotations

from typing import Tuple

import torch

from stylegrad.terms.base import Term


def temporal_loss_and_grad(x: torch.Tensor, warped: torch.Tensor, weight: torch.Tensor,
                           temporal_weight: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Value (B,) and gradient (B, 3, H, W) of the weighted temporal loss. ``x`` and
    ``warped``: (B, 3, H, W); ``weight``: (H, W), (1, H, W) or (B, 1, H, W)."""
    D = x.shape[1] * x.shape[2] * x.shape[3]
    c = weight.to(x.dtype)
    while c.ndim < 4:
        c = c[None]
    d = x - warped.to(x.dtype)
    cd = c * d
    value = (cd * d).flatten(1).sum(1) * (temporal_weight / D)
    grad = cd * (2.0 * temporal_weight / D)
    return value, grad


class TemporalTerm(Term):
    """The temporal loss of one frame as a pixel term; calling it, ``x -> (value, gradient)``,
    is what ``optimize`` adds to every evaluation. Eager on every backend (the cuda backend
    runs frames with it in its eager loop, not in its CUDA graph)."""

    name = "temporal"
    column = "pixel"
    kind = "pixel"
    config_fields = ()          # stylegrad video's --temporal-weight, not a StyleConfig field
    path_note = "outside the CUDA graph: the cuda backend runs frames with it in its eager loop"

    def __init__(self, warped: torch.Tensor, weight: torch.Tensor, temporal_weight: float):
        super().__init__(None)
        self.warped = warped if warped.ndim == 4 else warped[None]
        self.weight = weight
        self.temporal_weight = float(temporal_weight)

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.warped.device != x.device:
            self.warped = self.warped.to(x.device)
            self.weight = self.weight.to(x.device)
        v, g = temporal_loss_and_grad(x, self.warped, self.weight, self.temporal_weight)
        return v.float(), g.to(x.dtype)

    def value_and_grad_pixels(self, image: torch.Tensor, ops=None) -> Tuple[torch.Tensor, torch.Tensor]:
        return self(image)

    def reference_value(self, feature, feats, image, targets):
        c = self.weight.to(image.device, image.dtype)
        while c.ndim < 4:
            c = c[None]
        d = image - self.warped.to(image.device, image.dtype)
        return (c * d * d).flatten(1).sum(1) * (self.temporal_weight / (image.shape[1] * image.shape[2] * image.shape[3]))


def warm_start(warped: torch.Tensor, content: torch.Tensor, disoccluded_fill: torch.Tensor) -> torch.Tensor:
    """The initial image of frame t: the previous stylised frame warped to frame t where
    ``disoccluded_fill`` is 1 (the flow is reliable), the content frame where it is 0
    (disoccluded pixels, motion boundaries, pixels whose flow leaves the frame)."""
    m = disoccluded_fill.to(warped.dtype)
    return warped * m + content.to(warped.dtype) * (1 - m)
