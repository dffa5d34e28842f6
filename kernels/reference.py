"""Float64 references: the slow, obviously-correct twin of every operation.

Each ``<name>_reference`` upcasts its inputs to float64 and returns float64
results. References of in-place operations return new tensors instead of
mutating their arguments. Tests compare both the CPU implementations
(``torch_ops.py``) and the CUDA kernels (``cuda_ops.py``) against these.

How close a kernel must come (one rule, used by the GPU tests, ``stylegrad kernels check
--emulate`` and ``bench/kernels``): :func:`allowed_error` for deterministic kernels,
:func:`chain_tolerance` for one long chain or an unordered (atomic) sum.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _d(t: Tensor) -> Tensor:
    return t.detach().to(torch.float64)


def gram_reference(F: Tensor) -> Tensor:
    F = _d(F)
    return F @ F.transpose(1, 2)


def style_loss_reference(G: Tensor, A: Tensor, loss_scale: float, grad_scale: float) -> tuple[Tensor, Tensor]:
    diff = _d(G) - _d(A)
    return loss_scale * (diff * diff).sum(dim=(1, 2)), grad_scale * diff


def style_feature_grad_reference(D: Tensor, F: Tensor) -> Tensor:
    return _d(D) @ _d(F)


def content_loss_reference(F: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
    diff = _d(F) - _d(P)
    return 0.5 * (diff * diff).flatten(1).sum(dim=1), diff


def tv_loss_reference(x: Tensor) -> tuple[Tensor, Tensor]:
    # Written as explicit loops over the two difference directions, unlike the
    # slicing in torch_ops.tv_loss, so the two are not the same code twice.
    x = _d(x)
    B, C, H, W = x.shape
    loss = torch.zeros(B, dtype=torch.float64, device=x.device)
    grad = torch.zeros_like(x)
    for i in range(H - 1):
        d = x[:, :, i + 1, :] - x[:, :, i, :]
        loss += (d * d).sum(dim=(1, 2))
        grad[:, :, i + 1, :] += 2 * d
        grad[:, :, i, :] -= 2 * d
    for j in range(W - 1):
        d = x[:, :, :, j + 1] - x[:, :, :, j]
        loss += (d * d).sum(dim=(1, 2))
        grad[:, :, :, j + 1] += 2 * d
        grad[:, :, :, j] -= 2 * d
    return loss, grad


def tv_l1_loss_reference(x: Tensor) -> tuple[Tensor, Tensor]:
    # Loops over rows and columns, as tv_loss_reference (not torch_ops' slicing).
    x = _d(x)
    B, C, H, W = x.shape
    loss = torch.zeros(B, dtype=torch.float64, device=x.device)
    grad = torch.zeros_like(x)
    for i in range(H - 1):
        d = x[:, :, i + 1, :] - x[:, :, i, :]
        loss += d.abs().sum(dim=(1, 2))
        grad[:, :, i + 1, :] += torch.sign(d)
        grad[:, :, i, :] -= torch.sign(d)
    for j in range(W - 1):
        d = x[:, :, :, j + 1] - x[:, :, :, j]
        loss += d.abs().sum(dim=(1, 2))
        grad[:, :, :, j + 1] += torch.sign(d)
        grad[:, :, :, j] -= torch.sign(d)
    return loss, grad


def relu_backward_accumulate_reference(g_above: Tensor | None, g_loss: Tensor | None,
                                       activation: Tensor) -> Tensor:
    g = torch.zeros(activation.shape, dtype=torch.float64, device=activation.device)
    if g_above is not None:
        g = g + _d(g_above)
    if g_loss is not None:
        g = g + _d(g_loss)
    return g * (_d(activation) > 0)


# -- acceptance --------------------------------------------------------------------------------

EPS32 = 2.0**-24   # float32's unit roundoff (half an ulp at 1.0)


def max_error(x: Tensor, ref: Tensor) -> float:
    """Largest absolute difference of ``x`` from ``ref``, in float64 (0 for empty tensors)."""
    return (_d(x) - _d(ref)).abs().max().item() if x.numel() else 0.0


def allowed_error(plain: Tensor, ref: Tensor) -> float:
    """The acceptance rule for a deterministic kernel: its max error against the float64
    reference ``ref`` may be at most 2x that of ``plain`` (the plain PyTorch expression at the
    same precision on the same inputs), plus a floor of 4 float32 roundings of the result's
    scale, so that cases exact on both sides (M = 1) do not compare 0 <= 2 x 0 on noise."""
    scale = _d(ref).abs().max().item() if ref.numel() else 0.0
    return 2 * max_error(plain, ref) + 4 * EPS32 * max(scale, 1e-30)


def chain_tolerance(n_terms: int, magnitude: Tensor, lam: float = 8.0) -> Tensor:
    """Probabilistic float32 bound, elementwise, for a sum of ``n_terms`` terms whose absolute
    values add up to ``magnitude``: lambda sqrt(n) u sum|terms| (Higham & Mary 2019), with
    lambda = 8 loose enough never to flake on seeded inputs and tight enough that an indexing
    or missing-term bug fails by orders of magnitude. For results that are one long chain or
    summed in no fixed order (float atomics), which cannot be held to :func:`allowed_error`."""
    return lam * math.sqrt(max(n_terms, 1)) * EPS32 * _d(torch.as_tensor(magnitude)) + 1e-30
