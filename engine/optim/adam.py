"""Adam on the pixels, capturable in a CUDA graph: torch.optim.Adam's arithmetic (no weight
decay, no amsgrad) with the step count and learning rate in device tensors."""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor

from stylegrad.optim._batched import check_param

__all__ = ["Adam"]


class Adam:
    """torch.optim.Adam (no weight decay, no amsgrad) with all state on the device.

    ``opt = Adam(x, lr=0.02)``; ``opt.step(grad)`` updates x in place. The step count and lr
    are float64 device tensors, so the bias corrections ``1 - beta**step`` are formed in double
    as torch does on the host. ``per_image`` is accepted for symmetry with
    :class:`~stylegrad.optim.lbfgs.LBFGS`: Adam is elementwise, so a batch already equals
    separate runs.
    """

    def __init__(self, x: Tensor, lr: float = 0.02, betas=(0.9, 0.999), eps: float = 1e-8,
                 per_image: bool = False):
        check_param(x, per_image)
        self.x = x
        self.per_image = per_image
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        dev, dt = x.device, x.dtype
        sdt = torch.float64
        self.exp_avg = torch.zeros_like(x, memory_format=torch.contiguous_format)
        self.exp_avg_sq = torch.zeros_like(x, memory_format=torch.contiguous_format)
        self.step_count = torch.zeros((), dtype=sdt, device=dev)
        self.lr = torch.full((), float(lr), dtype=sdt, device=dev)
        self._bc1 = torch.zeros((), dtype=torch.float64, device=dev)
        self._bc2 = torch.zeros((), dtype=torch.float64, device=dev)
        self._neg_step_size = torch.zeros((), dtype=dt, device=dev)
        self._bc2_sqrt = torch.zeros((), dtype=dt, device=dev)
        self._scratch = torch.zeros_like(self.exp_avg)

    def state_tensors(self) -> List[Tensor]:
        return [v for v in vars(self).values() if isinstance(v, Tensor) and v is not self.x]

    def reset(self) -> None:
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        self.step_count.zero_()

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        x = self.x.detach()
        if grad.shape != x.shape or grad.dtype != x.dtype or grad.device != x.device:
            raise ValueError(f"grad is {grad.dtype} {tuple(grad.shape)} on {grad.device}, "
                             f"x is {x.dtype} {tuple(x.shape)} on {x.device}")
        self.step_count.add_(1)
        b1, b2 = self.beta1, self.beta2
        # torch (capturable=False): m.lerp_(g, 1-b1); v = b2 v + (1-b2) g^2;
        # bc_k = 1 - b_k**step (double); p.addcdiv_(m, sqrt(v)/sqrt(bc2) + eps, value=-lr/bc1)
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        torch.pow(b1, self.step_count, out=self._bc1)
        self._bc1.neg_().add_(1.0)                            # 1 - b1**step (exact rewrite)
        torch.pow(b2, self.step_count, out=self._bc2)
        self._bc2.neg_().add_(1.0)
        torch.div(self.lr, self._bc1, out=self._bc1)          # step_size = lr / bc1
        self._neg_step_size.copy_(self._bc1.neg_())           # double -> param dtype, as torch's value=
        self._bc2_sqrt.copy_(self._bc2.sqrt_())
        den = self._scratch
        torch.sqrt(self.exp_avg_sq, out=den)
        den.div_(self._bc2_sqrt).add_(self.eps)
        torch.div(self.exp_avg, den, out=den)
        x.addcmul_(den, self._neg_step_size)
