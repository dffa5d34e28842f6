"""Shared pieces of the optimisers: parameter checks and batched (B, n) dot products / axpys.

Everything here is plain torch with ``out=`` / in-place forms, so nothing reads a value back to
the host and nothing allocates state: the optimisers' ``step`` can be captured in a CUDA graph.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def check_param(x: Tensor, per_image: bool) -> Tuple[int, int]:
    """(batch, n per image) of the parameter tensor, or a plain error."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if not x.is_contiguous():
        raise ValueError("x must be contiguous (it is updated in place through a flat view)")
    if per_image:
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"per_image=True needs x of shape (B, ...) with B >= 1, got {tuple(x.shape)}")
        batch = x.shape[0]
    else:
        batch = 1
    n = x.numel() // batch if batch else 0
    return batch, n


def grad_view(grad: Tensor, x: Tensor, batch: int, n: int) -> Tensor:
    """The gradient as (batch, n), checked against x."""
    if grad.shape != x.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)}, x {tuple(x.shape)}")
    if grad.dtype != x.dtype or grad.device != x.device:
        raise ValueError(f"grad is {grad.dtype} on {grad.device}, x is {x.dtype} on {x.device}")
    # A view when grad is contiguous (the normal case); a non-contiguous gradient is copied.
    return grad.reshape(batch, n)


def rowdot(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out[i] = <a[i], b[i]> for (B, n) a, b; out (B,). One image: torch.dot, as
    torch.optim.LBFGS computes it on flat vectors (so the torch-compatible mode reproduces its
    iterates bit for bit on CPU); several: one bmm."""
    if a.shape[0] == 1:
        torch.dot(a[0], b[0], out=out[0])
    else:
        torch.bmm(a.unsqueeze(1), b.unsqueeze(2), out=out.view(-1, 1, 1))


def rowaxpy_(y: Tensor, alpha: Tensor, x: Tensor) -> None:
    """y[i] += alpha[i] * x[i] in place; alpha (B,)."""
    y.addcmul_(x, alpha.unsqueeze(1))
