"""The one registry of CUDA kernel sources, their entry points and variants.

Every ``.cu`` file the package ships (``kernels/``) is listed here once. Development variants
live in ``bench/kernels/`` and join this same registry at run time
(:func:`add_development_source`, :func:`add_variant`), so the loader, the NVRTC check and the
CPU emulator find them like shipped kernels. An operation with several implementations lists
them in ``VARIANTS`` and names the one the engine runs in ``PROMOTED``; launchers ask
:func:`symbol` for the entry point. Promoting a variant means moving its file into
``kernels/``, listing it here and naming it in ``PROMOTED``; nothing is copy-pasted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DTYPE_SUFFIXES = ("f32", "bf16", "f16")
CSRC = Path(__file__).parent  # the shipped sources: <name>.cu and common.cuh


@dataclass(frozen=True)
class KernelSource:
    name: str  # file stem of <directory>/<name>.cu, also the NVRTC program name
    entry_points: tuple[str, ...]  # extern "C" symbols the file must define
    directory: Path | None = None  # None: kernels/ (shipped); else a development variant's folder


def _typed(*prefixes: str) -> tuple[str, ...]:
    return tuple(f"{p}_{s}" for p in prefixes for s in DTYPE_SUFFIXES)


SOURCES: dict[str, KernelSource] = {
    s.name: s
    for s in (
        KernelSource("gram", _typed("gram_tiled") + ("gram_sum_splits_f32",)),
        KernelSource("style_loss", ("style_loss_f32",)),
        KernelSource("content_loss", _typed("content_loss")),
        KernelSource("tv_loss", ("tv_loss_f32",)),
        KernelSource("relu_backward_accumulate", _typed("relu_backward_accumulate")),
        KernelSource("sum_partials", ("sum_partials_f64",)),
    )
}
SHIPPED = frozenset(SOURCES)

# operations that live in a file not named after them
OP_SOURCE: dict[str, str] = {"gram_sum_splits": "gram"}

# operation -> {variant name: (source name, entry-point prefix)}
VARIANTS: dict[str, dict[str, tuple[str, str]]] = {
    "gram": {"tiled": ("gram", "gram_tiled")},
}

# operation -> variant used when a launcher is called without ``variant=``.
PROMOTED: dict[str, str] = {"gram": "tiled"}


def add_development_source(source: KernelSource) -> None:
    """Register a development kernel file (outside the package). Idempotent for the same
    source; a shipped source cannot be replaced."""
    if source.directory is None:
        raise ValueError(f"development source {source.name!r} needs its directory")
    if source.name in SHIPPED:
        raise ValueError(f"{source.name!r} is a shipped kernel source; pick another name")
    SOURCES[source.name] = source


def add_variant(op: str, variant: str, source: str, prefix: str) -> None:
    """Make ``variant`` of ``op`` (entry points ``<prefix>_<dtype>`` of ``source``) selectable."""
    if source not in SOURCES:
        raise ValueError(f"unknown kernel source {source!r}")
    VARIANTS.setdefault(op, {})[variant] = (source, prefix)


def symbol(op: str, dtype_suffix: str, variant: str | None = None) -> tuple[str, str]:
    """Return (source name, entry-point symbol) for ``op`` at ``dtype_suffix``."""
    if op not in VARIANTS:
        if variant is not None:
            raise ValueError(f"{op} has no variants, got variant={variant!r}")
        return OP_SOURCE.get(op, op), f"{op}_{dtype_suffix}"
    choice = PROMOTED.get(op) if variant is None else variant
    if choice not in VARIANTS[op]:
        raise ValueError(f"unknown {op} variant {choice!r}; known: {sorted(VARIANTS[op])}")
    source, prefix = VARIANTS[op][choice]
    return source, f"{prefix}_{dtype_suffix}"


def read_source(name: str) -> str:
    """Full NVRTC input for kernel source ``name``: common.cuh + ``<name>.cu``."""
    if name not in SOURCES:
        raise ValueError(f"unknown kernel source {name!r}; known: {sorted(SOURCES)}")
    common = (CSRC / "common.cuh").read_text()
    body = ((SOURCES[name].directory or CSRC) / f"{name}.cu").read_text()
    return f'{common}\n#line 1 "{name}.cu"\n{body}'
