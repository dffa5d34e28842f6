"""Pure-torch implementations of stylegrad's hot operations: the CPU backends' kernels.

They run on any device (CPU or CUDA). Arithmetic is float32; losses and Gram matrices are
float32; gradients of features come back in the features' dtype (computed in float32, rounded
once), matching the CUDA launchers in ``cuda_ops`` (same names and signatures for the six
operations a backend uses; :func:`stylegrad.kernels.ops_for` picks one of the two modules).
Each function has a float64 twin ``<name>_reference`` in ``reference.py``.

``adam_step_``, ``lbfgs_dots`` and ``lbfgs_axpy_`` are reached only through the capturable
optimisers' opt-in ``use_kernels`` flag; their CUDA kernels are development variants in
``bench/kernels/``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._validate import check_batch_broadcast, check_float, check_ndim


def gram(F: Tensor) -> Tensor:
    """G = F F^T per batch: F (B, C, M) any float dtype -> (B, C, C) float32."""
    check_ndim("F", F, 3)
    check_float("F", F)
    F32 = F.float()
    return torch.bmm(F32, F32.transpose(1, 2))


def style_loss(G: Tensor, A: Tensor, loss_scale: float, grad_scale: float) -> tuple[Tensor, Tensor]:
    """loss[b] = loss_scale * sum (G-A)^2, D = grad_scale * (G-A); A (1|B, C, C)."""
    check_ndim("G", G, 3)
    check_batch_broadcast("A", A, G)
    diff = G.float() - A.float()
    return loss_scale * diff.square().sum(dim=(1, 2)), grad_scale * diff


def style_feature_grad(D: Tensor, F: Tensor) -> Tensor:
    """D @ F: D (B, C, C), F (B, C, M) -> (B, C, M) in F's dtype, in F's memory layout.

    F may be the (B, C, M) view of a channels-last feature map (contiguous as (B, M, C)); the
    result then has the same strides, computed as (F^T D^T)^T without copying F.
    """
    check_ndim("D", D, 3)
    check_ndim("F", F, 3)
    if not F.is_contiguous() and F.transpose(1, 2).is_contiguous():
        return torch.bmm(F.transpose(1, 2).float(), D.transpose(1, 2).float()).to(F.dtype).transpose(1, 2)
    return torch.bmm(D.float(), F.float()).to(F.dtype)


def content_loss(F: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
    """loss[b] = 1/2 sum (F-P)^2 (float32), grad = F-P in F's dtype; P (1|B, ...)."""
    check_float("F", F)
    check_batch_broadcast("P", P, F)
    diff = F.float() - P.float()
    return 0.5 * diff.square().flatten(1).sum(dim=1), diff.to(F.dtype)


def tv_loss(x: Tensor) -> tuple[Tensor, Tensor]:
    """Total variation (squared differences, no scale) of x (B, C, H, W) and its gradient."""
    check_ndim("x", x, 4)
    x = x.float()
    dv = x[:, :, 1:, :] - x[:, :, :-1, :]  # empty when H == 1
    dh = x[:, :, :, 1:] - x[:, :, :, :-1]  # empty when W == 1
    loss = dv.square().sum(dim=(1, 2, 3)) + dh.square().sum(dim=(1, 2, 3))
    grad = torch.zeros_like(x)
    grad[:, :, :-1, :] -= 2 * dv
    grad[:, :, 1:, :] += 2 * dv
    grad[:, :, :, :-1] -= 2 * dh
    grad[:, :, :, 1:] += 2 * dh
    return loss, grad


def relu_backward_accumulate(g_above: Tensor | None, g_loss: Tensor | None, activation: Tensor) -> Tensor:
    """(g_above + g_loss) * (activation > 0); either gradient may be None (not both)."""
    if g_above is None and g_loss is None:
        raise ValueError("relu_backward_accumulate needs g_above or g_loss, got neither")
    for name, t in (("g_above", g_above), ("g_loss", g_loss)):
        if t is not None and t.shape != activation.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, activation {tuple(activation.shape)}")
    # Sum in float32 (a no-op conversion for float32 inputs), then one masked multiply into
    # that fresh tensor: ~3x faster on CPU than torch.where with a zeros tensor (measured).
    if g_above is not None and g_loss is not None:
        g = torch.add(g_above.float(), g_loss.float())
    else:
        g = (g_above if g_above is not None else g_loss).float().clone()
    g.mul_(activation > 0)
    return g.to(activation.dtype)


def adam_step_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
               step: int | float | Tensor, lr: float | Tensor,
               beta1: float, beta2: float, eps: float) -> None:
    """One Adam step in place (torch.optim.Adam, no weight decay).

    ``step`` is the count after incrementing (1 on the first call); it and ``lr``
    may be 0-d tensors on param's device, so nothing is read back to the host.
    """
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    if isinstance(step, Tensor):
        # 1 - beta^step as -expm1(step * log(beta)), log(beta) taken in double
        # on the host: accurate in float32, where 1 - beta**step would cancel
        # (and float64 is not available on every device).
        bc1 = -torch.expm1(step.float() * math.log(beta1))
        bc2 = -torch.expm1(step.float() * math.log(beta2))
        denom = exp_avg_sq.sqrt() / bc2.sqrt() + eps
        param.sub_((lr / bc1) * (exp_avg / denom))
    else:
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        denom = exp_avg_sq.sqrt() / math.sqrt(bc2) + eps
        if isinstance(lr, Tensor):
            param.sub_((lr / bc1) * (exp_avg / denom))
        else:
            param.addcdiv_(exp_avg, denom, value=-lr / bc1)


def lbfgs_dots(V: Tensor, x: Tensor) -> Tensor:
    """(K,) dot products of the rows of V (K, n) with x (n,)."""
    check_ndim("V", V, 2)
    check_ndim("x", x, 1)
    return V.float() @ x.float()


def lbfgs_axpy_(y: Tensor, alpha: Tensor, x: Tensor) -> None:
    """y += alpha * x in place, alpha a 0-d tensor (read on device, no sync)."""
    if alpha.dim() != 0:
        raise ValueError(f"alpha must be a 0-d tensor, got shape {tuple(alpha.shape)}")
    y.addcmul_(x, alpha)
