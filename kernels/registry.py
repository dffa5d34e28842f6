"""The one registry of CUDA kernel sources, their entry points and variants.

Every ``.cu`` file in ``kernels/`` is listed here once. An operation with several
implementations lists them in ``VARIANTS`` and names the winner in
``PROMOTED``; launchers ask :func:`symbol` for the entry point, so promoting a
variant is a one-word change here and nothing is copy-pasted.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_SUFFIXES = ("f32", "bf16", "f16")


@dataclass(frozen=True)
class KernelSource:
    name: str  # file stem of kernels/<name>.cu, also the NVRTC program name
    entry_points: tuple[str, ...]  # extern "C" symbols the file must define


def _typed(*prefixes: str) -> tuple[str, ...]:
    return tuple(f"{p}_{s}" for p in prefixes for s in DTYPE_SUFFIXES)


SOURCES: dict[str, KernelSource] = {
    s.name: s
    for s in (
        KernelSource("gram", _typed("gram_naive", "gram_tiled")),
        KernelSource("style_loss", ("style_loss_f32",)),
        KernelSource("content_loss", _typed("content_loss")),
        KernelSource("tv_loss", ("tv_loss_f32",)),
        KernelSource("relu_backward_accumulate", _typed("relu_backward_accumulate")),
        KernelSource("adam_step", ("adam_step_f32",)),
        KernelSource("lbfgs", ("lbfgs_dots_f32", "lbfgs_axpy_f32")),
        KernelSource("normalize", ("normalize_f32",)),
        KernelSource("clamp", ("clamp_f32",)),
    )
}

# operations that live in a file not named after them
OP_SOURCE: dict[str, str] = {"lbfgs_dots": "lbfgs", "lbfgs_axpy": "lbfgs"}

# operation -> {variant name: (source name, entry-point prefix)}
VARIANTS: dict[str, dict[str, tuple[str, str]]] = {
    "gram": {
        "naive": ("gram", "gram_naive"),
        "tiled": ("gram", "gram_tiled"),
    },
}

# operation -> variant used when a launcher is called without ``variant=``.
PROMOTED: dict[str, str] = {"gram": "tiled"}


def symbol(op: str, dtype_suffix: str, variant: str | None = None) -> tuple[str, str]:
    """Return (source name, entry-point symbol) for ``op`` at ``dtype_suffix``."""
    if op not in VARIANTS:
        if variant is not None:
            raise ValueError(f"{op} has no variants, got variant={variant!r}")
        return OP_SOURCE.get(op, op), f"{op}_{dtype_suffix}"
    choice = PROMOTED[op] if variant is None else variant
    if choice not in VARIANTS[op]:
        raise ValueError(f"unknown {op} variant {choice!r}; known: {sorted(VARIANTS[op])}")
    source, prefix = VARIANTS[op][choice]
    return source, f"{prefix}_{dtype_suffix}"
