"""Compile every kernel with NVRTC for a list of architectures, no GPU needed.

Backs ``stylegrad kernels check [--arch sm_80,sm_90]``. Any warning in the
NVRTC log counts as a failure (our sources are meant to compile clean), and so
does an entry point that the registry lists but the cubin lacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .loader import KernelCompileError, KernelUnavailableError, compile_source
from .registry import SOURCES

DEFAULT_ARCHS = ("sm_80", "sm_90")


@dataclass(frozen=True)
class CheckResult:
    kernel: str
    arch: str
    ok: bool
    message: str  # "" when clean, else the NVRTC log or the reason
    seconds: float


def check_all(archs: list[str] | None = None) -> list[CheckResult]:
    """Compile each kernel source for each arch; one CheckResult per pair."""
    results = []
    for arch in list(archs) if archs else list(DEFAULT_ARCHS):
        for name in SOURCES:
            start = time.perf_counter()
            try:
                cubin, log = compile_source(name, arch)
                # Every registered entry point must be in the cubin's ELF string
                # table, so a renamed kernel fails here rather than at launch.
                missing = [e for e in SOURCES[name].entry_points if b"\0" + e.encode() + b"\0" not in cubin]
                ok = not log and not missing
                message = log or (f"entry points missing from cubin: {missing}" if missing else "")
            except (KernelCompileError, KernelUnavailableError) as exc:
                ok, message = False, str(exc)
            results.append(CheckResult(name, arch, ok, message, time.perf_counter() - start))
    return results


def format_check_table(results: list[CheckResult]) -> str:
    """Plain-text table, one row per result; failures' logs follow the table."""
    width = max([len("kernel")] + [len(r.kernel) for r in results])
    lines = [f"{'kernel':<{width}}  {'arch':<7} {'status':<6} {'seconds':>7}"]
    for r in results:
        status = "ok" if r.ok else "FAIL"
        lines.append(f"{r.kernel:<{width}}  {r.arch:<7} {status:<6} {r.seconds:>7.2f}")
    for r in results:
        if not r.ok:
            lines.append(f"\n--- {r.kernel} ({r.arch}) ---\n{r.message}")
    return "\n".join(lines)
