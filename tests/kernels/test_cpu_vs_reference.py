"""CPU implementations against their float64 references on seeded random,
awkwardly shaped inputs. Tolerances: see conftest.py (EPS32, sum_tol)."""

import pytest
import torch

import stylegrad.kernels as K
from conftest import EPS32, assert_within, sum_tol

# (C, M) pairs: odd and power-of-two-plus-one sizes; the big M only with small C
# so the whole file stays well under a second on 2 cores.
GRAM_SHAPES = [(3, 1), (3, 97), (3, 4097), (64, 1), (64, 97), (64, 4097), (513, 97)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("C,M", GRAM_SHAPES)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gram(C, M, B, dtype, gen):
    F = torch.randn(B, C, M, generator=gen).to(dtype)
    G = K.gram(F)
    assert G.dtype == torch.float32 and G.shape == (B, C, C)
    # The 16-bit inputs upcast exactly to float32 and their products are exact
    # in float32, so the only error is the M-term float32 summation.
    Fa = F.double().abs()
    assert_within(G, K.gram_reference(F), sum_tol(M, Fa @ Fa.transpose(1, 2)), f"gram {dtype} C={C} M={M}")


@pytest.mark.parametrize("C", [3, 64, 513])
@pytest.mark.parametrize("B,A_batch", [(1, 1), (3, 1), (3, 3)])
def test_style_loss(C, B, A_batch, gen):
    G = torch.randn(B, C, C, generator=gen)
    A = torch.randn(A_batch, C, C, generator=gen)
    loss, D = K.style_loss(G, A, loss_scale=0.37, grad_scale=1.9)
    loss_ref, D_ref = K.style_loss_reference(G, A, 0.37, 1.9)
    # D: one rounding for G - A, one for rounding grad_scale (1.9 is not a
    # float32), one for the product -> 3 EPS32 of |scale|(|G|+|A|).
    mag = 1.9 * (G.double().abs() + A.double().abs())
    assert_within(D, D_ref, 3 * EPS32 * mag + 1e-30, "style D")
    # loss: the diff's own rounding (relative 2 EPS32 after squaring, per term)
    # plus a C*C-term positive sum; bound relative to the (positive) loss itself.
    tol = (2 * EPS32 + sum_tol(C * C, torch.tensor(1.0)).item()) * loss_ref.abs() * 1.5
    assert_within(loss, loss_ref, tol, "style loss")


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (3, 64, 5, 7), (2, 513, 3, 3)])
@pytest.mark.parametrize("P_batch_one", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_content_loss(shape, P_batch_one, dtype, gen):
    F = torch.randn(shape, generator=gen).to(dtype)
    P = torch.randn((1,) + shape[1:] if P_batch_one else shape, generator=gen).to(dtype)
    loss, grad = K.content_loss(F, P)
    loss_ref, grad_ref = K.content_loss_reference(F, P)
    assert grad.dtype == dtype and loss.dtype == torch.float32
    # grad: float32 difference (one rounding) then one rounding to the output
    # dtype: unit roundoff u of that dtype (2^-8 bf16, 2^-11 fp16, 2^-24 fp32).
    u = {torch.float32: EPS32, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[dtype]
    assert_within(grad, grad_ref, (u + EPS32) * grad_ref.abs() * 1.01 + 1e-30, "content grad")
    n = F[0].numel()
    tol = (2 * EPS32 + sum_tol(n, torch.tensor(1.0)).item()) * loss_ref.abs() * 1.5
    assert_within(loss, loss_ref, tol, "content loss")


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (3, 3, 1, 9), (2, 3, 8, 1), (3, 3, 17, 13), (1, 64, 7, 5)])
def test_tv_loss(shape, gen):
    x = torch.rand(shape, generator=gen)
    loss, grad = K.tv_loss(x)
    loss_ref, grad_ref = K.tv_loss_reference(x)
    # grad: at most 4 differences (1 rounding each) combined with 3 adds, all of
    # magnitude <= 2*2*max|x|: a few EPS32 of 16*max|x|, with margin.
    assert_within(grad, grad_ref, 8 * EPS32 * 16 * x.abs().max().item(), "tv grad")
    n = 2 * x[0].numel()
    tol = (2 * EPS32 + sum_tol(n, torch.tensor(1.0)).item()) * loss_ref.abs() * 1.5 + 1e-30
    assert_within(loss, loss_ref, tol, "tv loss")


@pytest.mark.parametrize("which", ["both", "above", "loss"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_accumulate(which, dtype, gen):
    shape = (3, 64, 5, 7)
    act = torch.randn(shape, generator=gen).clamp_min(0).to(dtype)  # ~half exact zeros
    ga = torch.randn(shape, generator=gen).to(dtype) if which in ("both", "above") else None
    gl = torch.randn(shape, generator=gen).to(dtype) if which in ("both", "loss") else None
    out = K.relu_backward_accumulate(ga, gl, act)
    ref = K.relu_backward_accumulate_reference(ga, gl, act)
    assert out.dtype == dtype
    u = {torch.float32: EPS32, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[dtype]
    # one float32 add, then one rounding to dtype; masked entries must be exactly 0
    assert_within(out, ref, (u + EPS32) * ref.abs() * 1.01, "relu backward")
    assert torch.equal(out[act <= 0], torch.zeros_like(out[act <= 0]))
