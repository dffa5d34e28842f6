"""CUDA launchers: same names and signatures as ``torch_ops.py``, running the NVRTC
kernels of ``kernels/*.cu`` on CUDA tensors (``stylegrad.kernels.cuda_ops.gram(F)``).

Launchers validate shapes, dtypes, devices, contiguity and grid limits up front and raise
ValueError / TypeError; without a GPU or cuda-python they raise KernelUnavailableError. A
non-contiguous tensor is an error, never silently copied. Output tensors may be passed in
(``out=``, ``loss_out=``, ``grad_out=``...) so callers can reuse buffers (and tests can poison
them); otherwise they are allocated through ``loader.empty`` on the input's device. Every
launch goes to PyTorch's current stream; no launcher reads a value back to the host, so all of
them can be captured in a CUDA graph. The reductions are deterministic: per-block float64
partials summed in a fixed order by a second launch, no atomics (the same bits on every run).

Everything device-specific (is this a kernel device, how many SMs, allocation, compile and
launch) is asked of ``loader``, which is where the CPU emulator plugs in: under
``STYLEGRAD_EMULATE=1`` these same launchers run on CPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import loader, registry
from ._validate import FLOAT_DTYPES, check_batch_broadcast, check_float, check_ndim

_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16", torch.float64: "f64"}
_THREADS = 256
_F32 = (torch.float32,)
# Device limits on the grid (all GPUs since compute capability 3.0).
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def _cuda(name: str, t: Tensor, device: torch.device | None = None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    problem = loader.device_problem(t.device)
    if problem is not None:
        if t.device.type == "cpu" and not torch.cuda.is_available():
            raise loader.KernelUnavailableError(f"{problem}; {name} is on {t.device}")
        raise ValueError(f"{name} must be a CUDA tensor, got device {t.device}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {t.stride()}")


def _out(name: str, out: Tensor | None, shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    if out is None:
        return loader.empty(shape, dtype, device)
    _cuda(name, out, device)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} must be {dtype} of shape {tuple(shape)}, got {out.dtype} {tuple(out.shape)}")
    return out


def _blocks(n: int, device: torch.device, per_sm: int = 8) -> int:
    """Blocks for a grid-stride loop over n: enough to fill the GPU, no more."""
    return max(1, min(-(-n // _THREADS), per_sm * loader.sm_count(device)))


def check_grid(op: str, grid) -> None:
    """Plain ValueError when a grid exceeds the device limits (the batch goes to y or z)."""
    for axis, n, limit in zip("xyz", grid, GRID_LIMITS):
        if n > limit:
            raise ValueError(f"{op}: gridDim.{axis} = {n} exceeds the CUDA limit of {limit}"
                             + (" (the batch size sets it: split the batch)" if axis != "x" else ""))


def _run(op: str, dtype: torch.dtype, grid, args, device: torch.device, variant: str | None = None) -> None:
    check_grid(op, grid)
    source, symbol = registry.symbol(op, _SUFFIX[dtype], variant)
    kernel = loader.get_kernel(source, symbol, device)
    loader.launch(kernel, grid, _THREADS, args, device)


def _finish_sum(partials: Tensor, out: Tensor, scale: float) -> None:
    """out[b] = scale * sum_i partials[b, i], in a fixed order (sum_partials.cu)."""
    B, n = partials.shape
    _run("sum_partials", torch.float64, (1, B), (partials.data_ptr(), out.data_ptr(), np.int64(n),
                                                 np.float64(scale)), out.device)


def _loss_grid(n: int, B: int, device: torch.device) -> tuple[int, int]:
    return _blocks(n, device, per_sm=max(1, 8 // B)), B


def gram(F: Tensor, *, out: Tensor | None = None) -> Tensor:
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
    # 64x64 tiles on/above the diagonal; split M so that about four blocks per SM are in
    # flight, but keep each chunk >= 256 columns so the split partials stay a small fraction
    # of the traffic. The chunk is a multiple of the kernel's 32-column staging slice.
    tiles = (C + 63) // 64
    pairs = tiles * (tiles + 1) // 2
    want = -(-4 * loader.sm_count(F.device) // (pairs * B))
    splits = max(1, min(want, -(-M // 256)))
    chunk = -(-(-(-M // splits)) // 32) * 32
    splits = -(-M // chunk)
    grid = (pairs, splits, B)
    if splits == 1:
        _run("gram", F.dtype, grid, (F.data_ptr(), out.data_ptr(), np.int32(C), np.int64(M), np.int64(chunk)),
             F.device)
        return out
    check_grid("gram", grid)  # before allocating the workspace
    work = loader.empty((splits, B, C, C), torch.float32, F.device)
    _run("gram", F.dtype, grid, (F.data_ptr(), work.data_ptr(), np.int32(C), np.int64(M), np.int64(chunk)),
         F.device)
    n = B * C * C
    _run("gram_sum_splits", torch.float32, (_blocks(n, F.device),),
         (work.data_ptr(), out.data_ptr(), np.int64(n), np.int32(splits)), F.device)
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
    loss = _out("loss_out", loss_out, (B,), torch.float32, G.device)
    D = _out("D_out", D_out, (B, C, C), torch.float32, G.device)
    if B == 0 or C == 0:
        return loss.zero_(), D
    CC = C * C
    grid = _loss_grid(CC, B, G.device)
    check_grid("style_loss", grid)
    partials = loader.empty(grid[::-1], torch.float64, G.device)
    args = (G.data_ptr(), A.data_ptr(), D.data_ptr(), partials.data_ptr(), np.int64(CC),
            np.int64(0 if A.shape[0] == 1 else CC), np.float32(grad_scale))
    _run("style_loss", torch.float32, grid, args, G.device)
    _finish_sum(partials, loss, float(loss_scale))
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
    loss = _out("loss_out", loss_out, (B,), torch.float32, F.device)
    grad = _out("grad_out", grad_out, F.shape, F.dtype, F.device)
    N = F[0].numel() if B else 0
    if N == 0:
        return loss.zero_(), grad
    grid = _loss_grid(N, B, F.device)
    check_grid("content_loss", grid)
    partials = loader.empty(grid[::-1], torch.float64, F.device)
    args = (F.data_ptr(), P.data_ptr(), grad.data_ptr(), partials.data_ptr(), np.int64(N),
            np.int64(0 if P.shape[0] == 1 else N))
    _run("content_loss", F.dtype, grid, args, F.device)
    _finish_sum(partials, loss, 0.5)
    return loss, grad


def tv_loss(x: Tensor, *, loss_out: Tensor | None = None,
            grad_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Total variation of x (B, C, H, W) float32 and its gradient."""
    check_ndim("x", x, 4)
    check_float("x", x, _F32)
    _cuda("x", x)
    B, C, H, W = x.shape
    loss = _out("loss_out", loss_out, (B,), torch.float32, x.device)
    grad = _out("grad_out", grad_out, x.shape, torch.float32, x.device)
    CHW = C * H * W
    if B == 0 or CHW == 0:
        return loss.zero_(), grad
    grid = _loss_grid(CHW, B, x.device)
    check_grid("tv_loss", grid)
    partials = loader.empty(grid[::-1], torch.float64, x.device)
    args = (x.data_ptr(), grad.data_ptr(), partials.data_ptr(), np.int32(H), np.int32(W), np.int64(CHW))
    _run("tv_loss", torch.float32, grid, args, x.device)
    _finish_sum(partials, loss, 1.0)
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
