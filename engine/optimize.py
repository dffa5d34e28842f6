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
from typing import Callable, Optional

import torch

from .backends.base import Evaluation
from .config import StyleConfig
from .optim import make_optimizer

EvaluateFn = Callable[[torch.Tensor], Evaluation]
# (iteration k, evaluation of x_k, ms, x_k or None) -> stop. x_k is passed only where
# ``keep_image(k)`` is true (a copy of the image costs memory traffic on every iteration).
# A report that returns True stops the loop there (cancellation); None or False goes on.
ReportFn = Callable[[int, Evaluation, float, Optional[torch.Tensor]], Optional[bool]]


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
    opt = make_optimizer(x, config)
    for k in range(iters + 1):
        snap = x.clone() if (keep_image(k) or k == iters) else None
        t0 = time.perf_counter()
        ev = evaluate(x)
        last = k == iters or not bool(torch.isfinite(ev.total).any())
        if not last:
            opt.step(ev.grad.to(x.dtype))
        ms = (time.perf_counter() - t0) * 1e3
        stop = report(k, ev, ms, snap) if report is not None else None
        if last or stop is True:
            break
    return x
