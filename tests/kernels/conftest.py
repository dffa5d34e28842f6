"""Shared helpers for the kernels tests.

Tolerance vocabulary used across these tests (the rules live in
``stylegrad.kernels.reference``, shared with the emulator check and bench/kernels): EPS32 is float32's unit
roundoff (2^-24, half an ulp at 1.0). A sum of M products evaluated in
float32 has error bounded by ~M*EPS32*sum|terms| in the worst case and, for
rounding errors that behave like independent random signs, by
~lambda*sqrt(M)*EPS32*sum|terms| with lambda a small constant (Higham &
Mary, "A new approach to probabilistic rounding error analysis", 2019). We
test against the probabilistic bound with lambda = 8, which is loose enough
never to flake on seeded inputs and tight enough that any indexing or
missing-term bug (an O(1) relative error) fails by orders of magnitude.
"""

from __future__ import annotations


import pytest
import torch

from stylegrad.kernels.reference import EPS32, chain_tolerance as sum_tol  # noqa: F401 (the one rule)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, tol: torch.Tensor | float, what: str) -> None:
    err = (actual.double() - expected.double()).abs()
    bad = err > tol
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        tol_i = tol.flatten()[i].item() if isinstance(tol, torch.Tensor) else tol
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.numel()} elements out of tolerance; first at flat index {i}: "
            f"got {actual.flatten()[i].item()!r}, expected {expected.flatten()[i].item()!r}, "
            f"|err| {err.flatten()[i].item():.3g} > tol {tol_i:.3g}"
        )


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
