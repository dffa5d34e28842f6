"""The optimisers of the pixels: one L-BFGS and one Adam, each run eagerly by the CPU backends
and captured in a CUDA graph by the ``cuda`` backend (so they never read a value back to the
host inside ``step`` and keep all state in preallocated tensors).

``make_optimizer(x, config)`` builds the one a :class:`~stylegrad.config.StyleConfig` asks for;
``opt.step(grad)`` updates ``x`` in place given the gradient at the current ``x``.
"""
from __future__ import annotations

from torch import Tensor

from ..config import StyleConfig
from .adam import Adam
from .lbfgs import DIRECTIONS, LBFGS, TORCH_COMPATIBLE

__all__ = ["Adam", "DIRECTIONS", "LBFGS", "TORCH_COMPATIBLE", "make_optimizer"]


def make_optimizer(x: Tensor, config: StyleConfig, per_image: bool = True, direction: str = "two_loop"):
    """The optimiser ``config`` asks for, over ``x`` (B, 3, H, W). ``per_image``: each image of
    the batch has its own L-BFGS history, so a batch gives the results of separate runs."""
    if config.optimizer == "lbfgs":
        return LBFGS(x, history=config.lbfgs_history, lr=config.effective_lr, per_image=per_image,
                     direction=direction)
    return Adam(x, lr=config.effective_lr, per_image=per_image)
