"""The total-variation term on the pixels: ``tv_weight`` times the sum of squared (``tv_norm``
l2) or absolute (l1, neural-style-pt's) neighbour differences. No backward through the network."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from stylegrad.terms import losses
from stylegrad.terms.base import Term


class TVTerm(Term):
    name = "tv"
    column = "tv"
    kind = "pixel"
    config_fields = ("tv_weight", "tv_norm")
    kernel_ops = ("tv_loss",)
    path_note = "--tv-norm l1 has no CUDA kernel (the cuda backend refuses it)"

    @property
    def active(self) -> bool:
        return self.config.tv_weight > 0

    def value_and_grad_pixels(self, image, ops) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        cfg = self.config
        if cfg.tv_weight == 0:   # no gradient term: callers add nothing
            return torch.zeros(image.shape[0], device=image.device), None
        if cfg.tv_norm == "l1":   # backends whose kernels lack it refuse --tv-norm l1 when built
            loss, g = ops.tv_l1_loss(image)
        else:
            loss, g = ops.tv_loss(image)
        return loss * cfg.tv_weight, g * cfg.tv_weight

    def reference_value(self, feature, feats, image, targets):
        cfg = self.config
        return cfg.tv_weight * losses.tv_loss(image, cfg.tv_norm) if cfg.tv_weight > 0 else None
