"""Development kernels: variants and operations the engine does not run, beside the harness
(``bench_kernels.py``) that checks and times them. Not part of the installed package.

Importing this module registers each ``.cu`` file of this folder with the one registry
(``stylegrad.kernels.registry``), so the NVRTC loader, ``stylegrad kernels check`` and the CPU
emulator treat them like shipped kernels. Each has its launcher here (built on the helpers of
``cuda_ops``), a pure-torch twin and a float64 reference:

  gram_naive   one thread per output, an M-term float32 chain: the Gram's second opinion
  normalize    (x - mean[c]) / std[c]            (the engine normalises inside the VGG forward)
  clamp_       x = min(max(x, 0), 1), NaN stays NaN
  adam_step_   fused Adam step                   (stylegrad.optim does these inline in torch,
  lbfgs_dots   K dot products (float atomics)     where they can be captured with the rest of
  lbfgs_axpy_  y += alpha x, alpha on the device  the step; these kernels await a GPU timing)

Promotion: move the ``.cu`` into ``kernels/``, list it in ``registry.SOURCES`` (and
``PROMOTED`` for a variant), move its launcher into ``cuda_ops`` and its tests into tests/kernels.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stylegrad.kernels import cuda_ops, registry
from stylegrad.kernels._validate import check_float, check_ndim
from stylegrad.kernels.cuda_ops import _F32, _blocks, _cuda, _out, _run
from stylegrad.kernels.registry import KernelSource, _typed

HERE = Path(__file__).resolve().parent

for _src in (KernelSource("gram_naive", _typed("gram_naive"), HERE),
             KernelSource("adam_step", ("adam_step_f32",), HERE),
             KernelSource("lbfgs", ("lbfgs_dots_f32", "lbfgs_axpy_f32"), HERE),
             KernelSource("normalize", ("normalize_f32",), HERE),
             KernelSource("clamp", ("clamp_f32",), HERE)):
    registry.add_development_source(_src)
registry.add_variant("gram", "naive", "gram_naive", "gram_naive")
registry.OP_SOURCE.update({"lbfgs_dots": "lbfgs", "lbfgs_axpy": "lbfgs"})

# variant name -> launcher, for the harness (the promoted one is cuda_ops.gram)
GRAM_VARIANTS = {"tiled": lambda F: cuda_ops.gram(F), "naive": lambda F: gram_naive(F)}


# ------------------------------------------------------------------------------ launchers
def gram_naive(F: Tensor, *, out: Tensor | None = None) -> Tensor:
    check_ndim("F", F, 3)
    check_float("F", F)
    _cuda("F", F)
    B, C, M = F.shape
    out = _out("out", out, (B, C, C), torch.float32, F.device)
    if out.numel() == 0:
        return out
    grid = (-(-C * C // 256), B)
    _run("gram", F.dtype, grid, (F.data_ptr(), out.data_ptr(), np.int32(C), np.int64(M)), F.device, "naive")
    return out


def _scalar_arg(name: str, v, device: torch.device) -> tuple[int, np.float32]:
    """(device pointer or 0, host value) for a number or a one-element float32 tensor."""
    if isinstance(v, Tensor):
        _cuda(name, v, device)
        if v.numel() != 1 or v.dtype != torch.float32:
            raise ValueError(f"{name} tensor must hold one float32, got {v.dtype} {tuple(v.shape)}")
        return v.data_ptr(), np.float32(0.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number or a float32 CUDA tensor, got {type(v).__name__}")
    return 0, np.float32(v)


def adam_step_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step, lr,
               beta1: float, beta2: float, eps: float) -> None:
    for name, t in (("param", param), ("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        check_float(name, t, _F32)
        _cuda(name, t, param.device)
        if t.shape != param.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, param {tuple(param.shape)}")
    step_ptr, step_value = _scalar_arg("step", step, param.device)
    lr_ptr, lr_value = _scalar_arg("lr", lr, param.device)
    n = param.numel()
    if n == 0:
        return
    args = (param.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(),
            step_ptr, step_value, lr_ptr, lr_value, np.float32(beta2), np.float32(1.0 - beta1),
            np.float32(1.0 - beta2), np.float32(eps), np.int64(n))
    _run("adam_step", torch.float32, (_blocks(n, param.device),), args, param.device)


def lbfgs_dots(V: Tensor, x: Tensor, *, out: Tensor | None = None) -> Tensor:
    check_ndim("V", V, 2)
    check_ndim("x", x, 1)
    check_float("V", V, _F32)
    check_float("x", x, _F32)
    _cuda("V", V)
    _cuda("x", x, V.device)
    K, n = V.shape
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} elements, V rows have {n}")
    out = _out("out", out, (K,), torch.float32, V.device).zero_()
    if K == 0 or n == 0:
        return out
    grid = (_blocks(n, V.device, per_sm=max(1, 8 // K)), K)
    _run("lbfgs_dots", torch.float32, grid, (V.data_ptr(), x.data_ptr(), out.data_ptr(), np.int64(n)), V.device)
    return out


def lbfgs_axpy_(y: Tensor, alpha: Tensor, x: Tensor) -> None:
    check_float("y", y, _F32)
    check_float("x", x, _F32)
    _cuda("y", y)
    _cuda("x", x, y.device)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {tuple(x.shape)}, y {tuple(y.shape)}")
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha must be a float32 CUDA tensor, got {type(alpha).__name__}")
    alpha_ptr, _ = _scalar_arg("alpha", alpha, y.device)
    n = y.numel()
    if n:
        _run("lbfgs_axpy", torch.float32, (_blocks(n, y.device),),
             (y.data_ptr(), alpha_ptr, x.data_ptr(), np.int64(n)), y.device)


def _channel_vector(name: str, v, x: Tensor) -> Tensor:
    v = torch.as_tensor(v, dtype=torch.float32, device=x.device).reshape(-1)
    if v.numel() != x.shape[1]:
        raise ValueError(f"{name} must have {x.shape[1]} entries (one per channel), got {v.numel()}")
    return v


def normalize(x: Tensor, mean, std, *, out: Tensor | None = None) -> Tensor:
    check_ndim("x", x, 4)
    check_float("x", x, _F32)
    _cuda("x", x)
    mean = _channel_vector("mean", mean, x).contiguous()
    std = _channel_vector("std", std, x).contiguous()
    out = _out("out", out, x.shape, torch.float32, x.device)
    B, C, H, W = x.shape
    n = x.numel()
    if n:
        args = (x.data_ptr(), mean.data_ptr(), std.data_ptr(), out.data_ptr(), np.int32(C), np.int64(H * W),
                np.int64(n))
        _run("normalize", torch.float32, (_blocks(n, x.device),), args, x.device)
    return out


def clamp_(x: Tensor) -> None:
    check_float("x", x, _F32)
    _cuda("x", x)
    n = x.numel()
    if n:
        _run("clamp", torch.float32, (_blocks(n, x.device),), (x.data_ptr(), np.int64(n)), x.device)


# ------------------------------------------------------------------------------ torch twins, references
def normalize_torch(x: Tensor, mean, std) -> Tensor:
    check_ndim("x", x, 4)
    return (x.float() - _channel_vector("mean", mean, x).view(1, -1, 1, 1)) / _channel_vector("std", std, x).view(
        1, -1, 1, 1)


def clamp_torch_(x: Tensor) -> None:
    x.clamp_(0.0, 1.0)


def normalize_reference(x: Tensor, mean, std) -> Tensor:
    mean = torch.as_tensor(mean, dtype=torch.float64, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float64, device=x.device).view(1, -1, 1, 1)
    return (x.double() - mean) / std


def clamp_reference(x: Tensor) -> Tensor:
    return x.double().clamp(0.0, 1.0)


# ------------------------------------------------------------------------------ optimiser twins
# The torch versions of the optimiser kernels (stylegrad.optim does the same math inline).

def adam_step_torch_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
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


def lbfgs_dots_torch(V: Tensor, x: Tensor) -> Tensor:
    """(K,) dot products of the rows of V (K, n) with x (n,)."""
    check_ndim("V", V, 2)
    check_ndim("x", x, 1)
    return V.float() @ x.float()


def lbfgs_axpy_torch_(y: Tensor, alpha: Tensor, x: Tensor) -> None:
    """y += alpha * x in place, alpha a 0-d tensor (read on device, no sync)."""
    if alpha.dim() != 0:
        raise ValueError(f"alpha must be a 0-d tensor, got shape {tuple(alpha.shape)}")
    y.addcmul_(x, alpha)


def _d64(t: Tensor) -> Tensor:
    return t.detach().to(torch.float64)


def adam_step_reference(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                        step: int | float | Tensor, lr: float | Tensor,
                        beta1: float, beta2: float, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (param, exp_avg, exp_avg_sq) after one step, textbook Adam in float64."""
    step = float(step)
    lr = float(lr)
    g = _d64(grad)
    m = beta1 * _d64(exp_avg) + (1 - beta1) * g
    v = beta2 * _d64(exp_avg_sq) + (1 - beta2) * g * g
    m_hat = m / (1 - beta1**step)
    v_hat_sqrt = v.sqrt() / math.sqrt(1 - beta2**step)
    return _d64(param) - lr * m_hat / (v_hat_sqrt + eps), m, v


def lbfgs_dots_reference(V: Tensor, x: Tensor) -> Tensor:
    return (_d64(V) * _d64(x)).sum(dim=1)


def lbfgs_axpy_reference(y: Tensor, alpha: Tensor, x: Tensor) -> Tensor:
    return _d64(y) + _d64(alpha) * _d64(x)
