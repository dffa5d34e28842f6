"""CUDA launchers: same names and signatures as ``cpu.py``, running the NVRTC
kernels of ``kernels/*.cu`` on CUDA tensors (``stylegrad.kernels.cuda_ops.gram(F)``).

Launchers validate shapes, dtypes, devices and contiguity up front and raise
ValueError / TypeError; without a GPU or cuda-python they raise
KernelUnavailableError. Output tensors may be passed in (``out=``, ``loss_out=``,
``grad_out=``...) so callers can reuse buffers (and tests can poison them);
otherwise they are allocated on the input's device. Every launch goes to
PyTorch's current stream; no launcher reads a value back to the host, so all
of them can be captured in a CUDA graph (launchers that accumulate into a
loss or Gram output zero it first with a memset on the same stream).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from . import loader, registry
from ._validate import FLOAT_DTYPES, as_channel_vector, check_batch_broadcast, check_float, check_ndim

_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
_THREADS = 256
_F32 = (torch.float32,)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _cuda(name: str, t: Tensor, device: torch.device | None = None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        if not torch.cuda.is_available():
            raise loader.KernelUnavailableError(f"CUDA kernels need a CUDA GPU; {name} is on {t.device}")
        raise ValueError(f"{name} must be a CUDA tensor, got device {t.device}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {t.stride()}")


def _out(name: str, out: Tensor | None, shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    _cuda(name, out, device)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} must be {dtype} of shape {tuple(shape)}, got {out.dtype} {tuple(out.shape)}")
    return out


def _blocks(n: int, device: torch.device, per_sm: int = 8) -> int:
    """Blocks for a grid-stride loop over n: enough to fill the GPU, no more."""
    return max(1, min(-(-n // _THREADS), per_sm * _sm_count(device.index)))


def _run(op: str, dtype: torch.dtype, grid, args, device: torch.device, variant: str | None = None) -> None:
    source, symbol = registry.symbol(op, _SUFFIX[dtype], variant)
    kernel = loader.get_kernel(source, symbol, device)
    loader.launch(kernel, grid, _THREADS, args, device)


def gram(F: Tensor, *, out: Tensor | None = None, variant: str | None = None) -> Tensor:
    """G = F F^T: F (B, C, M) float32/bf16/fp16 contiguous -> (B, C, C) float32."""
    check_ndim("F", F, 3)
    check_float("F", F)
    _cuda("F", F)
    B, C, M = F.shape
    out = _out("out", out, (B, C, C), torch.float32, F.device)
    if out.numel() == 0:
        return out
    if M == 0:
        return out.zero_()
    name = variant or registry.PROMOTED["gram"]
    if name == "naive":
        grid = (-(-C * C // _THREADS), B)
        _run("gram", F.dtype, grid, (F.data_ptr(), out.data_ptr(), np.int32(C), np.int64(M)), F.device, name)
        return out
    # tiled: 64x64 tiles on/above the diagonal; split M so that about four
    # blocks per SM are in flight, but keep each chunk >= 256 columns so the
    # atomics stay a small fraction of the traffic. The chunk is a multiple of
    # the kernel's 32-column staging slice.
    tiles = (C + 63) // 64
    pairs = tiles * (tiles + 1) // 2
    want = -(-4 * _sm_count(F.device.index) // (pairs * B))
    splits = max(1, min(want, -(-M // 256)))
    chunk = -(-(-(-M // splits)) // 32) * 32
    splits = -(-M // chunk)
    out.zero_()
    grid = (pairs, splits, B)
    _run("gram", F.dtype, grid, (F.data_ptr(), out.data_ptr(), np.int32(C), np.int64(M), np.int64(chunk)),
         F.device, name)
    return out


def style_loss(G: Tensor, A: Tensor, loss_scale: float, grad_scale: float, *,
               loss_out: Tensor | None = None, D_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """loss[b] = loss_scale sum (G-A)^2, D = grad_scale (G-A); float32, A (1|B, C, C)."""
    check_ndim("G", G, 3)
    check_float("G", G, _F32)
    check_batch_broadcast("A", A, G)
    check_float("A", A, _F32)
    _cuda("G", G)
    _cuda("A", A, G.device)
    B, C, _ = G.shape
    loss = _out("loss_out", loss_out, (B,), torch.float32, G.device).zero_()
    D = _out("D_out", D_out, (B, C, C), torch.float32, G.device)
    if B == 0 or C == 0:
        return loss, D
    CC = C * C
    grid = (_blocks(CC, G.device, per_sm=max(1, 8 // B)), B)
    args = (G.data_ptr(), A.data_ptr(), D.data_ptr(), loss.data_ptr(), np.int64(CC),
            np.int64(0 if A.shape[0] == 1 else CC), np.float32(loss_scale), np.float32(grad_scale))
    _run("style_loss", torch.float32, grid, args, G.device)
    return loss, D


def style_feature_grad(D: Tensor, F: Tensor) -> Tensor:
    """D @ F in F's dtype. No custom kernel: this is a plain batched GEMM, and
    cuBLAS (through torch.bmm, on the current stream) is at or near peak for
    it. D is rounded to F's dtype first so bf16/fp16 take the tensor cores;
    cuBLAS still accumulates in float32."""
    check_ndim("D", D, 3)
    check_ndim("F", F, 3)
    _cuda("D", D)
    _cuda("F", F, D.device)
    return torch.bmm(D.to(F.dtype), F)


def content_loss(F: Tensor, P: Tensor, *, loss_out: Tensor | None = None,
                 grad_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """loss[b] = 1/2 sum (F-P)^2 float32, grad = F-P in F's dtype; P (1|B, ...) same dtype."""
    check_float("F", F)
    check_batch_broadcast("P", P, F)
    if P.dtype != F.dtype:
        raise TypeError(f"P must have F's dtype {F.dtype}, got {P.dtype}")
    _cuda("F", F)
    _cuda("P", P, F.device)
    B = F.shape[0]
    loss = _out("loss_out", loss_out, (B,), torch.float32, F.device).zero_()
    grad = _out("grad_out", grad_out, F.shape, F.dtype, F.device)
    N = F[0].numel() if B else 0
    if N == 0:
        return loss, grad
    grid = (_blocks(N, F.device, per_sm=max(1, 8 // B)), B)
    args = (F.data_ptr(), P.data_ptr(), grad.data_ptr(), loss.data_ptr(), np.int64(N),
            np.int64(0 if P.shape[0] == 1 else N))
    _run("content_loss", F.dtype, grid, args, F.device)
    return loss, grad


def tv_loss(x: Tensor, *, loss_out: Tensor | None = None,
            grad_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Total variation of x (B, C, H, W) float32 and its gradient."""
    check_ndim("x", x, 4)
    check_float("x", x, _F32)
    _cuda("x", x)
    B, C, H, W = x.shape
    loss = _out("loss_out", loss_out, (B,), torch.float32, x.device).zero_()
    grad = _out("grad_out", grad_out, x.shape, torch.float32, x.device)
    CHW = C * H * W
    if B == 0 or CHW == 0:
        return loss, grad
    grid = (_blocks(CHW, x.device, per_sm=max(1, 8 // B)), B)
    args = (x.data_ptr(), grad.data_ptr(), loss.data_ptr(), np.int32(H), np.int32(W), np.int64(CHW))
    _run("tv_loss", torch.float32, grid, args, x.device)
    return loss, grad


def relu_backward_accumulate(g_above: Tensor | None, g_loss: Tensor | None, activation: Tensor, *,
                             out: Tensor | None = None) -> Tensor:
    """(g_above + g_loss) * (activation > 0); either gradient may be None, not both."""
    if g_above is None and g_loss is None:
        raise ValueError("relu_backward_accumulate needs g_above or g_loss, got neither")
    check_float("activation", activation, FLOAT_DTYPES)
    _cuda("activation", activation)
    for name, t in (("g_above", g_above), ("g_loss", g_loss)):
        if t is not None:
            _cuda(name, t, activation.device)
            if t.shape != activation.shape or t.dtype != activation.dtype:
                raise ValueError(f"{name} must match activation ({activation.dtype} {tuple(activation.shape)}), "
                                 f"got {t.dtype} {tuple(t.shape)}")
    out = _out("out", out, activation.shape, activation.dtype, activation.device)
    n = activation.numel()
    if n == 0:
        return out
    args = (0 if g_above is None else g_above.data_ptr(), 0 if g_loss is None else g_loss.data_ptr(),
            activation.data_ptr(), out.data_ptr(), np.int64(n))
    _run("relu_backward_accumulate", activation.dtype, (_blocks(n, activation.device),), args, activation.device)
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


def adam_step_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
               step: int | float | Tensor, lr: float | Tensor,
               beta1: float, beta2: float, eps: float) -> None:
    """Fused in-place Adam step (float32). Pass ``step`` (count after increment)
    and ``lr`` as one-element float32 CUDA tensors to capture it in a CUDA graph."""
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
    # 1 - beta is formed here in double, then rounded: see adam_step.cu.
    args = (param.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(),
            step_ptr, step_value, lr_ptr, lr_value, np.float32(beta2), np.float32(1.0 - beta1),
            np.float32(1.0 - beta2), np.float32(eps), np.int64(n))
    _run("adam_step", torch.float32, (_blocks(n, param.device),), args, param.device)


def lbfgs_dots(V: Tensor, x: Tensor, *, out: Tensor | None = None) -> Tensor:
    """(K,) float32 device tensor of dot(V[k], x); V (K, n), x (n,), float32."""
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
    """y += alpha * x in place; alpha a one-element float32 CUDA tensor (not read on host)."""
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
    if n == 0:
        return
    _run("lbfgs_axpy", torch.float32, (_blocks(n, y.device),), (y.data_ptr(), alpha_ptr, x.data_ptr(), np.int64(n)),
         y.device)


def normalize(x: Tensor, mean, std, *, out: Tensor | None = None) -> Tensor:
    """(x - mean[c]) / std[c] for x (B, C, H, W) float32. mean/std: (C,) float32
    CUDA tensors (sequences are copied to the device, which a graph cannot capture)."""
    check_ndim("x", x, 4)
    check_float("x", x, _F32)
    _cuda("x", x)
    mean = as_channel_vector("mean", mean, x).contiguous()
    std = as_channel_vector("std", std, x).contiguous()
    out = _out("out", out, x.shape, torch.float32, x.device)
    B, C, H, W = x.shape
    n = x.numel()
    if n == 0:
        return out
    args = (x.data_ptr(), mean.data_ptr(), std.data_ptr(), out.data_ptr(), np.int32(C), np.int64(H * W), np.int64(n))
    _run("normalize", torch.float32, (_blocks(n, x.device),), args, x.device)
    return out


def clamp_(x: Tensor) -> None:
    """Clamp float32 x to [0, 1] in place (NaN stays NaN)."""
    check_float("x", x, _F32)
    _cuda("x", x)
    n = x.numel()
    if n:
        _run("clamp", torch.float32, (_blocks(n, x.device),), (x.data_ptr(), np.int64(n)), x.device)
