"""The optimisation loop: evaluate (loss, image gradient) -> optimiser step, with progress.

Optimisers (both PyTorch's, which makes them the reference the GPU path is tested against):
- L-BFGS, history 100, one function evaluation per iteration and no line search, as Torch's
  ``optim.lbfgs`` used by neural-style (``torch.optim.LBFGS`` with ``max_iter=1`` per step; its
  history persists across steps).
- Adam.
We do not clamp the image to [0, 1] during optimisation (it would corrupt L-BFGS curvature
pairs); the output is clamped when written. The paper does not say.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from .backends.base import Evaluation
from .config import StyleConfig

EvaluateFn = Callable[[torch.Tensor], Evaluation]
# (iteration k, evaluation of x_k, ms, x_k or None) -> None. x_k is passed only where
# ``keep_image(k)`` is true (a copy of the image costs memory traffic on every iteration).
ReportFn = Callable[[int, Evaluation, float, Optional[torch.Tensor]], None]


def make_optimizer(x: torch.Tensor, config: StyleConfig) -> torch.optim.Optimizer:
    if config.optimizer == "lbfgs":
        return torch.optim.LBFGS(
            [x], lr=config.effective_lr, max_iter=1, history_size=config.lbfgs_history,
            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn=None,
        )
    return torch.optim.Adam([x], lr=config.effective_lr)


def optimize(x0: torch.Tensor, evaluate: EvaluateFn, config: StyleConfig,
             report: Optional[ReportFn] = None,
             keep_image: Callable[[int], bool] = lambda k: False) -> torch.Tensor:
    """Run ``config.iters`` iterations from ``x0``; reports iterations 0..iters.

    Iteration 0 is the initial image before any update; iteration k the image after k updates.
    Both optimisers evaluate exactly once per step (L-BFGS: ``max_iter=1``, no line search).
    """
    x = x0.detach().clone().requires_grad_(True)
    opt = make_optimizer(x, config)
    last: dict = {}

    def closure() -> torch.Tensor:
        k = last.get("k", 0)
        last["x"] = x.detach().clone() if keep_image(k) else None
        ev = evaluate(x.detach())
        x.grad = ev.grad.to(x.dtype)
        last["ev"] = ev
        return ev.total.sum()

    for k in range(config.iters):
        last["k"] = k
        t0 = time.perf_counter()
        opt.step(closure)
        ms = (time.perf_counter() - t0) * 1e3
        if report is not None:
            report(k, last["ev"], ms, last["x"])
    t0 = time.perf_counter()
    final = evaluate(x.detach())
    if report is not None:
        report(config.iters, final, (time.perf_counter() - t0) * 1e3, x.detach().clone())
    return x.detach()
