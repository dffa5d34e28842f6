"""The content term: 1/2 sum (F - P)^2 per content layer (Gatys et al. 2016, eq. 1), times
``content_weight`` and the layer's weight. d/dF = F - P. P: the photo's features
(``Targets.content``, made by ``stylegrad.terms.targets``)."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from stylegrad.terms import losses
from stylegrad.terms.base import Term


class ContentTerm(Term):
    name = "content"
    column = "content"
    config_fields = ("content_weight", "content_layers", "content_layer_weights")
    kernel_ops = ("content_loss",)

    def layers(self) -> Dict[str, float]:
        return self.config.active_content_layers()

    def value_and_grad(self, feats, targets, ops) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        from stylegrad.terms.gradnorm import l1_normalized

        cfg = self.config
        any_f = next(iter(feats.values()))
        value = torch.zeros(any_f.shape[0], dtype=torch.float32, device=any_f.device)
        grads: Dict[str, torch.Tensor] = {}
        for layer, w in self.layers().items():
            if layer not in feats:
                continue
            loss, g = ops.content_loss(feats[layer], targets.content[layer])
            scale = cfg.content_weight * w
            value = value + scale * loss
            g = l1_normalized(g * scale, scale) if cfg.normalize_gradients else g * scale
            grads[layer] = g if layer not in grads else grads[layer] + g
        return value, grads

    def reference_value(self, feature, feats, image, targets):
        total = None
        for layer, w in self.layers().items():
            if layer in feats:
                cw = self.config.content_weight * w
                v = cw * losses.content_loss(feature(layer, cw), targets.content[layer])
                total = v if total is None else total + v
        return total
