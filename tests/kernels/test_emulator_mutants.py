"""Deliberately broken kernels and launchers: the emulated check must catch each one.

A mutant is one textual edit of a shipped source (the edit must match exactly once, so a
mutant cannot silently stop applying when the source changes), compiled by the emulator in
place of the real file, then run through the same cases as ``stylegrad kernels check
--emulate`` (a subset of shapes that exercises the broken line; the case functions seed their
inputs from the shape, so each subset is part of what test_emulated_kernels.py runs and passes
on the real sources: a mutant's failure is its own). Run this file as a script to print the
table of mutants and what caught each.

Not a mutant here: removing the ``ti != tj`` guard of gram.cu's mirrored store. Since the
reductions stopped using atomics, a diagonal tile stores each value twice with the same bits
(the product terms commute), so that edit is equivalent, not a bug; "counted twice" lives on
as overlapping K-slices and an off-by-one over the split partials.

Known blind spot (measured, so not listed as a mutant): dropping the ``threadIdx.x == 0``
guard of ``sg_store_partial`` lets every thread store its value; on a GPU that is a
write-write race, but warp 0 always stores last here (it alone does five more shuffles), so
every schedule keeps the right value. The emulator sees races through values read, not
through conflicting writes.
"""
import shutil
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stylegrad.kernels import cuda_ops, emulator
from stylegrad.kernels.emulator import check

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")

FP32 = (torch.float32,)
SCHED = ("forward", "reverse")


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    source: str  # kernel source name, or "" for a launcher (Python) mutant
    old: str
    new: str
    cases: object  # () -> list of CaseResult


def _gram():
    return check.gram_cases(SCHED, cs=(64, 100), ms=(37, 4109), dtypes=FP32)


def _content():
    return check.content_loss_cases(SCHED, cs=(100,), ms=(4109,), dtypes=FP32)


MUTANTS = [
    Mutant("gram-no-sync-after-load", "__syncthreads after staging a K slice in shared memory removed", "gram",
           "        __syncthreads();\n#pragma unroll\n        for (int k = 0;", "\n#pragma unroll\n        for (int k = 0;",
           _gram),
    Mutant("gram-no-sync-before-reload", "__syncthreads before the next K slice overwrites shared memory removed",
           "gram", "        }\n        __syncthreads();\n    }\n", "        }\n    }\n", _gram),
    Mutant("block-sum-no-sync", "__syncthreads between the warp sums and the final warp removed (common.cuh)",
           "content_loss", "    if (lane == 0) partial[warp] = v;\n    __syncthreads();\n",
           "    if (lane == 0) partial[warp] = v;\n", _content),
    Mutant("partial-index-without-batch", "per-block partial stored without the batch offset (common.cuh)",
           "content_loss", "partials[(long long)blockIdx.y * gridDim.x + blockIdx.x]", "partials[blockIdx.x]",
           _content),
    Mutant("gram-store-bound-dropped", "bound check gi < C && gj < C of the tile store dropped", "gram",
           "            if (gi < C && gj < C) {", "            if (true) {", _gram),
    Mutant("gram-k-slices-overlap", "split-K chunks start 32 columns early: K-slices counted twice", "gram",
           "const long long k_begin = (long long)blockIdx.y * chunk;",
           "const long long k_begin = (long long)blockIdx.y * (chunk - 32);", _gram),
    Mutant("gram-split-sum-off-by-one", "k <= S when adding the split partials: one slice too many", "gram",
           "for (int k = 0; k < S; ++k)", "for (int k = 0; k <= S; ++k)", _gram),
    Mutant("gram-divergent-barrier", "__syncthreads only in threads whose K column is in range", "gram",
           "        __syncthreads();\n#pragma unroll\n        for (int k = 0;",
           "        if (k_ok) __syncthreads();\n#pragma unroll\n        for (int k = 0;", _gram),
    Mutant("tv-bound-dropped", "i + 1 < H bound of the vertical difference dropped", "tv_loss",
           "(i + 1 < H) ? xb[idx + W] - v : 0.0f", "xb[idx + W] - v", lambda: check.tv_loss_cases(SCHED, cs=(64,))),
    Mutant("relu-loop-bound-off-by-one", "i <= n in the grid-stride loop: one element past the end",
           "relu_backward_accumulate", "i < n;\n", "i <= n;\n",
           lambda: check.relu_cases(SCHED, cs=(100,), ms=(37,), dtypes=FP32)),
    Mutant("launcher-32-bit-sizes", "launchers pass 64-bit sizes as np.int32", "", "", "",
           lambda: check.gram_cases(SCHED, cs=(64,), ms=(37,), dtypes=FP32)
           + check.content_loss_cases(SCHED, cs=(64,), ms=(37,), dtypes=FP32)),
]


def _mutated_text(m: Mutant) -> str:
    text = emulator.source_text(m.source)
    assert text.count(m.old) == 1, f"mutant {m.name}: its edit matches {text.count(m.old)} times, not once"
    return text.replace(m.old, m.new)


def run_mutant(m: Mutant, monkeypatch=None):
    if m.source:
        with emulator.source_override(m.source, _mutated_text(m)):
            return m.cases()
    shim = SimpleNamespace(int32=np.int32, int64=np.int32, float32=np.float32, float64=np.float64)
    if monkeypatch is not None:
        monkeypatch.setattr(cuda_ops, "np", shim)
        return m.cases()
    old, cuda_ops.np = cuda_ops.np, shim
    try:
        return m.cases()
    finally:
        cuda_ops.np = old


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_caught(mutant, monkeypatch):
    results = run_mutant(mutant, monkeypatch)
    failed = [r for r in results if not r.ok]
    assert failed, f"mutant {mutant.name} ({mutant.what}) passed all {len(results)} cases"


if __name__ == "__main__":  # python tests/kernels/test_emulator_mutants.py: the table
    import time

    print(f"{'mutant':<32} {'what':<78} caught by")
    for m in MUTANTS:
        t0 = time.perf_counter()
        res = run_mutant(m)
        bad = [r for r in res if not r.ok]
        how = (bad[0].message if bad else "NOT CAUGHT")[:110]
        print(f"{m.name:<32} {m.what:<78} {len(bad)}/{len(res)} cases fail ({time.perf_counter() - t0:.1f} s): {how}")
