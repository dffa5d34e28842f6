"""Backend ``torch``: forward in torch, hand-written backward (``stylegrad.terms.backward``), no autograd.

The forward keeps only ReLU masks and max-pool winner codes (see ``stylegrad.terms.backward`` for
what and how many bytes per pixel); losses and their feature gradients come from
``stylegrad.kernels`` via :class:`SplitBackend`. Runs wherever torch does (CPU, CUDA).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch

from stylegrad.backends.base import SplitBackend
from stylegrad.model import vgg as vggmod
from stylegrad.terms import backward as bw


@dataclass
class SavedState:
    """What one forward leaves for its backward: loss-layer features (shared with the losses,
    not copies) and the masks / winner codes of the plan."""

    feats: Dict[str, torch.Tensor]
    tensors: Dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        return bw.saved_bytes(self.tensors)


class TorchBackend(SplitBackend):
    name = "torch"

    # channels-last (NHWC) tensors: oneDNN / cuDNN convolutions run faster on them (measured on
    # the 2-core CPU at 256^2: forward convs 116 -> 103 ms, transposed convs 123 -> 94 ms).
    memory_format = torch.channels_last
    precisions = ("fp32", "bf16")

    def __init__(self, vgg, config, device):
        # bf16: weights, activations, masks' source and the backward convolutions in bf16;
        # Gram matrices, losses and the image gradient in fp32 (stylegrad.kernels accumulate
        # in fp32 whatever the input dtype).
        self.precision = config.precision
        self.dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
        vgg = vgg.to(device=device, dtype=self.dtype)
        for c in vgg.convs.values():
            c.weight = c.weight.contiguous(memory_format=self.memory_format)
        super().__init__(vgg, config, device)
        self.plan = bw.make_plan(self.vgg.model, self.vgg.pool, config.loss_layers())

    def _input(self, image: torch.Tensor) -> torch.Tensor:
        return image.detach().to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    @classmethod
    def supports(cls, device: torch.device) -> Tuple[bool, str]:
        device = torch.device(device)
        if device.type == "cpu":
            return True, ""
        if device.type == "cuda":
            if torch.cuda.is_available():
                return True, ""
            return False, "backend 'torch' on CUDA needs a CUDA build of torch and a GPU"
        return False, f"backend 'torch' does not support device type {device.type!r}"

    def features(self, image: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            return vggmod.forward(self.vgg, self._input(image), layers)

    def forward_saving(self, image: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], SavedState]:
        with torch.no_grad():
            feats, saved = bw.forward_saving(self.vgg, self.plan, self._input(image))
        return feats, SavedState(feats, saved)

    def backward(self, saved: SavedState, feature_grads: Dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            g = bw.backward(self.vgg, self.plan, saved.feats, saved.tensors, feature_grads, ops=self.ops)
        return g.float().contiguous()
