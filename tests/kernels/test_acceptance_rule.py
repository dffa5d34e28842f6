"""The one rule for how close a kernel must come to its float64 reference
(``stylegrad.kernels.reference``), shared by the GPU tests, the emulator check and bench/kernels."""
import torch

from stylegrad.kernels.reference import EPS32, allowed_error, chain_tolerance, max_error


def test_allowed_error_is_twice_torchs_error_plus_a_floor():
    ref = torch.tensor([1.0, -4.0], dtype=torch.float64)
    plain = torch.tensor([1.0, -4.0 + 2.0**-10])        # exact in float32
    assert max_error(plain, ref) == 2.0**-10
    assert allowed_error(plain, ref) == 2 * 2.0**-10 + 4 * EPS32 * 4.0


def test_exact_results_still_get_a_floor_and_empty_ones_pass():
    ref = torch.zeros(3, dtype=torch.float64)
    assert 0 < allowed_error(torch.zeros(3), ref) <= 4 * EPS32 * 1e-30 * 1.0001
    assert max_error(torch.zeros(0), torch.zeros(0)) == 0.0


def test_chain_tolerance_grows_with_the_root_of_the_chain_length():
    m = torch.ones(2, dtype=torch.float64)
    assert torch.allclose(chain_tolerance(400, m) / chain_tolerance(100, m), torch.full((2,), 2.0, dtype=torch.float64))
    assert chain_tolerance(0, m).dtype == torch.float64
