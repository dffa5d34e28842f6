"""The torch twins of the development optimiser kernels (bench/kernels/variants.py): Adam
against torch.optim.Adam and the float64 reference, the L-BFGS dot products and axpy against
theirs. Their CUDA kernels are checked by bench_kernels.py (GPU, or --emulate)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from conftest import EPS32, assert_within, sum_tol

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "kernels"
sys.path.insert(0, str(_BENCH))
_spec = importlib.util.spec_from_file_location("variants", _BENCH / "variants.py")
V = sys.modules.get("variants") or importlib.util.module_from_spec(_spec)
if "variants" not in sys.modules:
    _spec.loader.exec_module(V)
    sys.modules["variants"] = V

LR, BETAS, EPS = 0.05, (0.9, 0.999), 1e-8
STEPS = 6


def _run_ours(p0, grads, step_as_tensor, lr_as_tensor):
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    step = torch.zeros(())
    lr = torch.tensor(LR) if lr_as_tensor else LR
    for t, g in enumerate(grads, start=1):
        if step_as_tensor:
            step += 1  # in place, as a graph-captured caller would do
            V.adam_step_torch_(p, g, m, v, step, lr, *BETAS, EPS)
        else:
            V.adam_step_torch_(p, g, m, v, t, lr, *BETAS, EPS)
    return p, m, v


@pytest.mark.parametrize("step_as_tensor,lr_as_tensor", [(False, False), (False, True), (True, False), (True, True)])
def test_adam_matches_torch_optim(step_as_tensor, lr_as_tensor, gen):
    p0 = torch.randn(3, 97, generator=gen)
    grads = [torch.randn(3, 97, generator=gen) * 10 ** (k % 3 - 1) for k in range(STEPS)]
    param = torch.nn.Parameter(p0.clone())
    opt = torch.optim.Adam([param], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0, foreach=False)
    for g in grads:
        param.grad = g.clone()
        opt.step()
    p, m, v = _run_ours(p0, grads, step_as_tensor, lr_as_tensor)
    state = opt.state[param]
    # Moments: the same lerp_/mul_/addcmul_ calls as torch -> bit-identical.
    assert torch.equal(m, state["exp_avg"]) and torch.equal(v, state["exp_avg_sq"])
    if not (step_as_tensor or lr_as_tensor):
        # Same op sequence and same double-precision scalars as torch's
        # single-tensor Adam: expect bit-identical parameters.
        torch.testing.assert_close(p, param.detach(), rtol=0, atol=0)
    else:
        # Tensor step/lr: bias corrections are formed in float32 on the device
        # (a few EPS32 relative each) and the update is a few more float32 ops;
        # each of the STEPS updates (|update| <= ~lr) carries ~8 EPS32 relative
        # error, the parameter itself one rounding per step.
        tol = STEPS * (8 * EPS32 * LR + EPS32 * (p0.abs() + STEPS * LR))
        assert ((p - param.detach()).abs() <= tol).all()


def test_adam_matches_float64_reference(gen):
    b1, b2 = BETAS
    p, g = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
    m, v = torch.randn(1000, generator=gen) * 0.1, torch.rand(1000, generator=gen) * 0.01
    p_ref, m_ref, v_ref = V.adam_step_reference(p, g, m, v, 3, LR, b1, b2, EPS)
    gd, md, vd = g.double(), m.double(), v.double()
    V.adam_step_torch_(p, g, m, v, 3, LR, b1, b2, EPS)
    # Error propagation, not a blanket rtol: the moment updates are a couple of
    # float32 ops on terms whose magnitudes add up to mag_m / mag_v (the result
    # itself can cancel to ~0, so it is not the right scale). The parameter
    # gets its own few roundings plus the moments' errors pushed through
    # u = (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps).
    tol_m = 4 * EPS32 * (b1 * md.abs() + (1 - b1) * gd.abs())
    tol_v = 4 * EPS32 * (b2 * vd + (1 - b2) * gd * gd)
    assert ((m.double() - m_ref).abs() <= tol_m).all()
    assert ((v.double() - v_ref).abs() <= tol_v).all()
    bc1, bc2 = 1 - b1**3, 1 - b2**3
    denom = v_ref.sqrt() / bc2**0.5 + EPS
    update = (LR / bc1) * m_ref / denom
    tol_p = 8 * EPS32 * (p_ref.abs() + update.abs()) + (LR / bc1) * tol_m / denom + update.abs() * tol_v / v_ref
    assert ((p.double() - p_ref).abs() <= tol_p).all()


@pytest.mark.parametrize("K_hist,n", [(1, 1), (5, 97), (17, 4097)])
def test_lbfgs_pieces(K_hist, n, gen):
    Vm = torch.randn(K_hist, n, generator=gen)
    x = torch.randn(n, generator=gen)
    dots = V.lbfgs_dots_torch(Vm, x)
    mag = (Vm.double().abs() * x.double().abs()).sum(dim=1)
    assert_within(dots, V.lbfgs_dots_reference(Vm, x), sum_tol(n, mag), "lbfgs dots")
    y = torch.randn(n, generator=gen)
    alpha = torch.tensor(-0.73)
    y_ref = V.lbfgs_axpy_reference(y, alpha, x)
    V.lbfgs_axpy_torch_(y, alpha, x)
    # one product and one add (or a single fma): 2 EPS32 of |y| + |alpha x|
    assert_within(y, y_ref, 2 * EPS32 * (y_ref.abs() + 0.73 * x.double().abs()) + 1e-30, "lbfgs axpy")


def test_lbfgs_hand():
    Vm = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    x = torch.tensor([1.0, 1.0, 2.0])
    assert torch.equal(V.lbfgs_dots_torch(Vm, x), torch.tensor([9.0, 1.0]))
    y = torch.tensor([1.0, 1.0, 1.0])
    V.lbfgs_axpy_torch_(y, torch.tensor(0.5), x)
    assert torch.equal(y, torch.tensor([1.5, 1.5, 2.0]))
    with pytest.raises(ValueError, match="0-d"):
        V.lbfgs_axpy_torch_(torch.zeros(3), torch.zeros(1), torch.zeros(3))
