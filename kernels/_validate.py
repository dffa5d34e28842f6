"""Argument checks shared by the CPU implementations and the CUDA launchers.

Plain ValueError / TypeError with messages that name the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_ndim(name: str, t: Tensor, ndim: int) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")


def check_float(name: str, t: Tensor, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must be one of {allowed}, got {str(t.dtype).removeprefix('torch.')}")


def check_batch_broadcast(name: str, t: Tensor, like: Tensor) -> None:
    """``t`` has ``like``'s shape except a batch dimension of 1 or like's batch."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != like.dim() or t.shape[1:] != like.shape[1:] or t.shape[0] not in (1, like.shape[0]):
        raise ValueError(
            f"{name} must have shape (1 or {like.shape[0]}, {', '.join(map(str, like.shape[1:]))}), "
            f"got {tuple(t.shape)}"
        )
