"""``stylegrad kernels check --emulate``: every CUDA kernel entry point, run by the CPU emulator
through the unmodified launchers of ``cuda_ops``, against its float64 reference.

Shapes are the awkward ones (C in {64, 100, 512}, M in {1, 37, 4109}, batch 2; fp32, bf16,
fp16 where the kernel takes them; broadcast and per-image targets). Each case must:

* stay within the acceptance rule of the GPU tests (``kernels.reference.allowed_error``): max
  error against the float64 reference at most 2x the max error of the plain PyTorch expression
  at the same precision on the same inputs (here PyTorch on the CPU), plus a floor of 4 float32
  roundings of the result's scale;
* produce the same bits under two schedules (forward and reverse thread/block order): a
  difference is a race inside a block (or a nondeterministic reduction);
* leave every canary intact, write every output element (outputs start as NaN), and pass only
  pointers into emulator buffers (strict mode).

Library code: returns results, never prints; the CLI formats them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from stylegrad.errors import error_text

from .. import cuda_ops, reference
from . import EmulatorError, build_all, empty, session

CS = (64, 100, 512)
MS = (1, 37, 4109)
BATCH = 2
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SCHEDULES = ("forward", "reverse")
_DN = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class CaseResult:
    kernel: str  # entry-point family, e.g. "gram_tiled (+gram_sum_splits)"
    dtype: str
    target: str  # "broadcast", "per-image" or "-"
    shape: str
    ratio: float  # worst error / allowed error over the case's outputs (<= 1 passes)
    ok: bool
    message: str  # "" when ok
    seconds: float


def _dev(t: Tensor) -> Tensor:
    """A copy of t in an emulator buffer (canaries around it)."""
    return empty(t.shape, t.dtype).copy_(t)


def _ratio(ours: Tensor, plain: Tensor, ref: Tensor) -> Tuple[float, str]:
    if torch.isnan(ours).any():
        return float("inf"), "NaN in output (an element never written, or a canary read)"
    allowed = reference.allowed_error(plain, ref)
    e = reference.max_error(ours, ref)
    return e / allowed, ("" if e <= allowed else f"error {e:.3g} > allowed {allowed:.3g} (2x torch's + floor)")


Runner = Callable[[], Sequence[Tensor]]


def _case(kernel: str, dtype: str, target: str, shape: str, run: Runner,
          checks: Callable[[Sequence[Tensor]], List[Tuple[Tensor, Tensor, Tensor]]],
          schedules: Sequence[str]) -> CaseResult:
    t0 = time.perf_counter()
    outs: Dict[str, List[Tensor]] = {}
    try:
        for sched in schedules:
            with session(schedule=sched, seed=1, strict=True):
                outs[sched] = list(run())  # fresh buffers from loader.empty on every launch
    except (EmulatorError, ValueError, TypeError) as exc:
        return CaseResult(kernel, dtype, target, shape, float("inf"), False, error_text(exc),
                          time.perf_counter() - t0)
    first = outs[schedules[0]]
    for sched in schedules[1:]:
        for a, b in zip(first, outs[sched]):
            if not torch.equal(a.view(torch.uint8) if a.dtype != torch.bool else a,
                               b.view(torch.uint8) if b.dtype != torch.bool else b):
                return CaseResult(kernel, dtype, target, shape, float("inf"), False,
                                  f"result differs between schedules {schedules[0]} and {sched} (a race)",
                                  time.perf_counter() - t0)
    worst, msg = 0.0, ""
    for ours, plain, ref in checks(first):
        r, m = _ratio(ours, plain, ref)
        if r > worst:
            worst, msg = r, m
    return CaseResult(kernel, dtype, target, shape, worst, worst <= 1.0, msg, time.perf_counter() - t0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gram_cases(schedules, cs=CS, ms=MS, dtypes=DTYPES) -> List[CaseResult]:
    out = []
    for dtype in dtypes:
        for C in cs:
            for M in ms:
                F = torch.randn(BATCH, C, M, generator=_gen(C * 7919 + M)).to(dtype)
                Fd = _dev(F)
                plain = torch.bmm(F, F.transpose(1, 2))
                ref = reference.gram_reference(F)
                out.append(_case("gram_tiled (+gram_sum_splits)", _DN[dtype], "-", f"B={BATCH} C={C} M={M}",
                                 lambda: [cuda_ops.gram(Fd)], lambda o: [(o[0], plain, ref)], schedules))
    return out


def style_loss_cases(schedules, cs=CS) -> List[CaseResult]:
    out = []
    for C in cs:
        for target, a_batch in (("broadcast", 1), ("per-image", BATCH)):
            g = _gen(C)
            G = torch.randn(BATCH, C, C, generator=g)
            A = torch.randn(a_batch, C, C, generator=g)
            Gd, Ad = _dev(G), _dev(A)
            diff = G - A
            loss_ref, D_ref = reference.style_loss_reference(G, A, 0.37, 1.9)
            out.append(_case("style_loss (+sum_partials)", "fp32", target, f"B={BATCH} C={C}",
                             lambda: list(cuda_ops.style_loss(Gd, Ad, 0.37, 1.9)),
                             lambda o: [(o[0], 0.37 * (diff * diff).sum(dim=(1, 2)), loss_ref),
                                        (o[1], 1.9 * diff, D_ref)], schedules))
    return out


def content_loss_cases(schedules, cs=CS, ms=MS, dtypes=DTYPES) -> List[CaseResult]:
    out = []
    for dtype in dtypes:
        for C in cs:
            for M in ms:
                for target, p_batch in (("broadcast", 1), ("per-image", BATCH)):
                    g = _gen(C * 31 + M)
                    F = torch.randn(BATCH, C, M, generator=g).to(dtype)
                    P = torch.randn(p_batch, C, M, generator=g).to(dtype)
                    Fd, Pd = _dev(F), _dev(P)
                    diff = F - P
                    loss_ref, grad_ref = reference.content_loss_reference(F, P)
                    out.append(_case("content_loss (+sum_partials)", _DN[dtype], target, f"B={BATCH} C={C} M={M}",
                                     lambda: list(cuda_ops.content_loss(Fd, Pd)),
                                     lambda o: [(o[0], 0.5 * (diff * diff).flatten(1).sum(1), loss_ref),
                                                (o[1], diff, grad_ref)], schedules))
    return out


def tv_loss_cases(schedules, cs=CS) -> List[CaseResult]:
    out = []
    for C in cs:
        for H, W in ((1, 1), (37, 1), (1, 37), (7, 587)):  # M = H*W in {1, 37, 4109}
            x = torch.rand(BATCH, C, H, W, generator=_gen(C + H * 1000 + W))
            xd = _dev(x)
            loss_plain, grad_plain = _tv_plain(x)
            loss_ref, grad_ref = reference.tv_loss_reference(x)
            out.append(_case("tv_loss (+sum_partials)", "fp32", "-", f"B={BATCH} C={C} H={H} W={W}",
                             lambda: list(cuda_ops.tv_loss(xd)),
                             lambda o: [(o[0], loss_plain, loss_ref), (o[1], grad_plain, grad_ref)], schedules))
    return out


def _tv_plain(x: Tensor) -> Tuple[Tensor, Tensor]:
    from .. import torch_ops

    return torch_ops.tv_loss(x)


def relu_cases(schedules, cs=CS, ms=MS, dtypes=DTYPES) -> List[CaseResult]:
    """Both gradients on every shape; one of them absent (a null pointer) on one awkward shape:
    the kernel is elementwise, the null branches do not depend on the shape."""
    out = []
    for dtype in dtypes:
        for C in cs:
            for M in ms:
                for which in ("both", "above", "loss") if (C, M) == (100, 37) else ("both",):
                    g = _gen(C * 13 + M)
                    act = torch.randn(BATCH, C, M, generator=g).to(dtype)
                    ga = torch.randn(BATCH, C, M, generator=g).to(dtype) if which != "loss" else None
                    gl = torch.randn(BATCH, C, M, generator=g).to(dtype) if which != "above" else None
                    actd = _dev(act)
                    gad = None if ga is None else _dev(ga)
                    gld = None if gl is None else _dev(gl)
                    total = ga if gl is None else (gl if ga is None else ga + gl)
                    ref = reference.relu_backward_accumulate_reference(ga, gl, act)
                    plain = total * (act > 0)
                    out.append(_case("relu_backward_accumulate", _DN[dtype], which, f"B={BATCH} C={C} M={M}",
                                     lambda: [cuda_ops.relu_backward_accumulate(gad, gld, actd)],
                                     lambda o: [(o[0], plain, ref)], schedules))
    return out


def style_feature_grad_cases(schedules) -> List[CaseResult]:
    out = []
    for dtype in DTYPES:
        g = _gen(5)
        D = torch.randn(BATCH, 100, 100, generator=g)
        F = torch.randn(BATCH, 100, 37, generator=g).to(dtype)
        Dd, Fd = _dev(D), _dev(F)
        ref = reference.style_feature_grad_reference(D, F)
        plain = torch.bmm(D.to(dtype), F)
        out.append(_case("style_feature_grad (torch.bmm)", _DN[dtype], "-", f"B={BATCH} C=100 M=37",
                         lambda: [cuda_ops.style_feature_grad(Dd, Fd)], lambda o: [(o[0], plain, ref)], schedules))
    return out


def run_checks(schedules: Sequence[str] = SCHEDULES) -> List[CaseResult]:
    """Every entry point on every shape; builds (or reuses) the emulator modules first."""
    build_all()
    results: List[CaseResult] = []
    for fn in (gram_cases, style_loss_cases, content_loss_cases, tv_loss_cases, relu_cases,
               style_feature_grad_cases):
        results += fn(schedules)
    return results


def format_table(results: Sequence[CaseResult]) -> str:
    """One row per (kernel, dtype, target): cases, worst error/allowed, status; failures after."""
    groups: Dict[Tuple[str, str, str], List[CaseResult]] = {}
    for r in results:
        groups.setdefault((r.kernel, r.dtype, r.target), []).append(r)
    w = max([len("kernel")] + [len(k[0]) for k in groups])
    head = f"{'kernel':<{w}}  {'dtype':<5} {'target':<10} {'cases':>5} {'worst err/allowed':>18} {'seconds':>8}  status"
    lines = [head, "-" * len(head)]
    for (kernel, dtype, target), rs in groups.items():
        worst = max(r.ratio for r in rs)
        ok = all(r.ok for r in rs)
        lines.append(f"{kernel:<{w}}  {dtype:<5} {target:<10} {len(rs):>5} {worst:>18.3f} "
                     f"{sum(r.seconds for r in rs):>8.2f}  {'ok' if ok else 'FAIL'}")
    bad = [r for r in results if not r.ok]
    lines.append(f"\n{len(results) - len(bad)} of {len(results)} cases pass (schedules compared bit for bit; "
                 "allowed = 2x torch's error vs float64 + 4 float32 ulps of the result's scale)")
    for r in bad:
        lines.append(f"FAIL {r.kernel} {r.dtype} {r.target} {r.shape}: {r.message}")
    return "\n".join(lines)
