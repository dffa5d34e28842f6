"""Backend ``reference``: PyTorch autograd end to end.

The oracle of every parity test and the rival of every benchmark; never the fast path. It uses
``stylegrad.terms.losses`` (plain differentiable torch), not ``stylegrad.kernels``, so the two
implementations check each other.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from stylegrad.backends.base import Backend, Evaluation
from stylegrad.model import vgg as vggmod
from stylegrad.terms import losses
from stylegrad.terms.gradnorm import NormalizeGradient
from stylegrad.terms.targets import Targets


class ReferenceBackend(Backend):
    name = "reference"

    def __init__(self, vgg, config, device):
        super().__init__(vgg.to(device=device), config, device)
        self._layers = sorted(set(config.content_layers) | set(config.style_layers))

    def features(self, image: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            return vggmod.forward(self.vgg, image.to(self.device), layers)

    def gram(self, f: torch.Tensor) -> torch.Tensor:
        return losses.gram(f)

    def evaluate(self, image: torch.Tensor, targets: Targets) -> Evaluation:
        cfg = self.config
        x = image.detach().requires_grad_(True)
        B = x.shape[0]
        zero = torch.zeros(B, device=x.device)
        with self.timer.phase("forward"):
            with torch.enable_grad():
                feats = vggmod.forward(self.vgg, x, self._layers)

                def feature(layer: str, weight: float):
                    # --normalize-gradients: the term's gradient at its layer is normalised
                    # (stylegrad.terms.gradnorm); the forward value is the feature itself
                    f = feats[layer]
                    return NormalizeGradient.apply(f, weight) if cfg.normalize_gradients else f

                columns = {"content": zero, "style": zero, "tv": zero}
                for term in self.terms:
                    v = term.reference_value(feature, feats, x, targets) if term.active else None
                    if v is not None:
                        columns[term.column] = columns[term.column] + v
                content, style, tv = columns["content"], columns["style"], columns["tv"]
                total = (content + style + tv).sum()
        with self.timer.phase("backward"):
            if total.requires_grad:
                (grad,) = torch.autograd.grad(total, x)
            else:
                grad = torch.zeros_like(x)
        return Evaluation(content.detach(), style.detach(), tv.detach(), grad)
