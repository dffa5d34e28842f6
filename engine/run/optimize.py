"""The eager optimisation loop: evaluate (loss, image gradient) -> optimiser step, with progress.

The optimisers are :mod:`stylegrad.optim`'s (the same L-BFGS and Adam the ``cuda`` backend
captures in a CUDA graph): L-BFGS with history 100, one function evaluation per iteration and
no line search, as Torch's ``optim.lbfgs`` in jcjohnson/neural-style, plus scale-free
safeguards that make it converge on trained VGG weights (see ``stylegrad.optim.lbfgs``); or
Adam. Each image of a batch has its own optimiser state, so a batch gives the results of
separate runs.

We do not clamp the image to [0, 1] during optimisation (it would corrupt L-BFGS curvature
pairs); the output is clamped when written. The paper does not say.

A run whose loss is non-finite for every image of the batch stops at that iteration (its last
report carries the non-finite loss); the caller decides what that means.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional, Protocol

import torch

from stylegrad.config import StyleConfig
from stylegrad.optim import make_optimizer, variable_scale


class Evaluated(Protocol):
    """What the loop reads of an evaluation (a backend's ``Evaluation``): the per-image loss
    (B,) and the gradient of its sum with respect to the image. Declared here so that the loop
    does not import the backends that call it."""

    @property
    def total(self) -> torch.Tensor: ...

    @property
    def grad(self) -> torch.Tensor: ...


EvaluateFn = Callable[[torch.Tensor], Evaluated]
# (iteration k, evaluation of x_k, ms, x_k or None) -> stop. x_k is passed only where
# ``keep_image(k)`` is true or k is the last iteration (a copy of the image costs memory
# traffic on every iteration). A run that ``config.tol`` stops before ``iters`` reports its
# last iteration with a fifth argument, True. A report that returns True stops the loop there
# (cancellation); None or False goes on.
ReportFn = Callable[..., Optional[bool]]


def converged(totals: List[torch.Tensor], config: StyleConfig) -> bool:
    """``config.tol``'s stopping rule on the per-image losses so far (one (B,) tensor per
    iteration): every image's loss fell by less than ``tol`` of its value ``tol_window``
    iterations ago. A non-finite or zero old loss never counts as converged."""
    w = config.tol_window
    if config.tol is None or len(totals) <= w:
        return False
    old, new = totals[-1 - w], totals[-1]
    ok = torch.isfinite(old) & torch.isfinite(new) & (old != 0)
    return bool((ok & ((old - new) < config.tol * old.abs())).all())


def optimize(x0: torch.Tensor, evaluate: EvaluateFn, config: StyleConfig,
             report: Optional[ReportFn] = None,
             keep_image: Callable[[int], bool] = lambda k: False,
             iters: Optional[int] = None) -> torch.Tensor:
    """Run ``iters`` (default ``config.iters``) iterations from ``x0`` (B, 3, H, W); reports
    iterations 0..iters.

    Iteration 0 is the initial image before any update; iteration k the image after k updates.
    Both optimisers evaluate exactly once per step. Stops early (after reporting it) at the
    first iteration whose loss is non-finite for every image, and when ``report`` returns True
    (cancelled: the image returned is the one after iteration k's update).
    """
    x = x0.detach().to(torch.float32).clone().contiguous()
    iters = config.iters if iters is None else iters
    scale = variable_scale(config)   # the optimiser works on u = scale * x (1: on x itself)
    u = x if scale == 1.0 else x * scale
    opt = make_optimizer(u, config)
    totals: List[torch.Tensor] = []
    for k in range(iters + 1):
        if scale != 1.0:
            x = u / scale
        t0 = time.perf_counter()
        ev = evaluate(x)
        if config.tol is not None:
            totals.append(ev.total.detach().float().cpu())
        stopped = k < iters and converged(totals, config)
        last = k == iters or stopped or not bool(torch.isfinite(ev.total).any())
        snap = x.clone() if (keep_image(k) or k == iters or stopped) else None   # x_k: not stepped yet
        if not last:
            opt.step(ev.grad.to(x.dtype) if scale == 1.0 else ev.grad.to(x.dtype) / scale)
        ms = (time.perf_counter() - t0) * 1e3
        stop = None
        if report is not None:
            stop = report(k, ev, ms, snap, True) if stopped else report(k, ev, ms, snap)
        if last or stop is True:
            break
    return x
