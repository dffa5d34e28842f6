"""The optimisers of the pixels: one L-BFGS and one Adam, each run eagerly by the CPU backends
and captured in a CUDA graph by the ``cuda`` backend (so they never read a value back to the
host inside ``step`` and keep all state in preallocated tensors).

``make_optimizer(x, config)`` builds the one a :class:`~stylegrad.config.StyleConfig` asks for;
``opt.step(grad)`` updates ``x`` in place given the gradient at the current ``x``.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from stylegrad.config import StyleConfig
from stylegrad.optim.adam import Adam
from stylegrad.optim.lbfgs import DIRECTIONS, LBFGS, TORCH_COMPATIBLE

__all__ = ["Adam", "DIRECTIONS", "LBFGS", "TORCH_COMPATIBLE", "make_optimizer", "variable_scale"]


def variable_scale(config: StyleConfig) -> float:
    """What the optimiser's variable is in image units: torch's L-BFGS rules are not scale-free
    (first step min(1, 1/|g|_1)), so ``lbfgs_rules="torch"`` runs on the image in pixel units,
    x * pixel_scale, as neural-style-pt's optimiser sees it; every other choice on x itself."""
    return float(config.pixel_scale) if config.optimizer == "lbfgs" and config.lbfgs_rules == "torch" else 1.0


def make_optimizer(x: Tensor, config: StyleConfig, per_image: bool = True, direction: Optional[str] = None):
    """The optimiser ``config`` asks for, over ``x`` (B, 3, H, W). ``per_image``: each image of
    the batch has its own L-BFGS history, so a batch gives the results of separate runs.
    ``direction``: overrides ``config.lbfgs_direction`` (None: the config's)."""
    if config.optimizer == "lbfgs":
        rules = TORCH_COMPATIBLE if config.lbfgs_rules == "torch" else {}
        direction = direction or config.lbfgs_direction
        if direction == "auto":     # config.LBFGS_DIRECTIONS says why
            # torch's rules mean torch's iterates: its own two-loop recursion, whose rounding
            # they amplify (tests/test_neural_style_pt.py follows neural-style-pt's run)
            direction = "compact" if x.device.type == "cpu" and config.lbfgs_rules != "torch" else "two_loop"
        return LBFGS(x, history=config.lbfgs_history, lr=config.effective_lr, per_image=per_image,
                     direction=direction, **rules)
    return Adam(x, lr=config.effective_lr, per_image=per_image)
