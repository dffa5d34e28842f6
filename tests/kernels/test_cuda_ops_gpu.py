"""CUDA kernels against the float64 references (needs a GPU; skipped otherwise).

Acceptance rule for every kernel: its max error against the float64 reference
is at most 2x the max error of the plain PyTorch expression evaluated at the
same precision on the same inputs, plus a tiny floor (a few float32 roundings
of the result's scale) so that exact-on-both-sides cases (M = 1) do not
compare 0 <= 0 * 2 on noise. Output buffers are NaN-poisoned before each
launch so an element the kernel forgets to write shows up as an error.

Why the 2x rule can hold for the reductions: they are deterministic (float64
per-block partials summed in a fixed order; the Gram's split-K partials summed
in float64), so their error is one float32 rounding of the result plus, for the
Gram, a chain of at most `chunk` float32 FMAs per split. Measured in the CPU
emulator against CPU PyTorch on the same shapes (stylegrad kernels check
--emulate): worst error / allowed = 0.42 (Gram fp32), 0.21 (style loss),
0.16 (content loss fp32), 0.12 (TV). Against cuBLAS/cub on a GPU: not verified.
The development variants (naive Gram, Adam, L-BFGS, normalize, clamp) are
checked by bench/kernels/bench_kernels.py, on a GPU and in the emulator.
"""

import pytest
import torch

import stylegrad.kernels as K
from stylegrad.kernels import cuda_ops
from stylegrad.kernels.reference import allowed_error, max_error

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
CS = [3, 64, 513]
MS = [1, 97, 4097]


def _check(ours, plain, ref, what):
    assert not torch.isnan(ours).any(), f"{what}: NaN in output (unwritten element?)"
    e_ours, allowed = max_error(ours, ref), allowed_error(plain, ref)
    assert e_ours <= allowed, f"{what}: error {e_ours:.3g} > allowed {allowed:.3g} (2 x torch's + floor)"


def _nan(shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


@pytest.fixture
def cgen():
    return torch.Generator(device="cuda").manual_seed(4321)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("C", CS)
@pytest.mark.parametrize("M", MS)
def test_gram(dtype, B, C, M, cgen):
    F = torch.randn(B, C, M, device="cuda", generator=cgen).to(dtype)
    G = cuda_ops.gram(F, out=_nan((B, C, C)))
    plain = torch.bmm(F, F.transpose(1, 2))
    _check(G, plain, K.gram_reference(F), f"gram {dtype} B={B} C={C} M={M}")


def test_reductions_are_bitwise_reproducible(cgen):
    """No atomics: the same inputs give the same bits, run after run."""
    F = torch.randn(2, 100, 4109, device="cuda", generator=cgen)
    P = torch.randn(1, 100, 4109, device="cuda", generator=cgen)
    first = [cuda_ops.gram(F), *cuda_ops.content_loss(F, P), *cuda_ops.tv_loss(F.view(2, 100, 7, 587))]
    first += list(cuda_ops.style_loss(first[0], first[0][:1].flip(1), 0.3, 1.7))
    for _ in range(3):
        again = [cuda_ops.gram(F), *cuda_ops.content_loss(F, P), *cuda_ops.tv_loss(F.view(2, 100, 7, 587))]
        again += list(cuda_ops.style_loss(again[0], again[0][:1].flip(1), 0.3, 1.7))
        for a, b in zip(first, again):
            assert torch.equal(a, b)


def test_gram_fp16_does_not_overflow():
    F = torch.full((1, 4, 4097), 200.0, dtype=torch.float16, device="cuda")  # each entry 4097*4e4 >> 65504
    G = cuda_ops.gram(F)
    assert torch.isfinite(G).all() and torch.allclose(G, torch.full_like(G, 4097 * 40000.0), rtol=1e-6)


@pytest.mark.parametrize("C", CS)
@pytest.mark.parametrize("B,A_batch", [(1, 1), (3, 1), (3, 3)])
def test_style_loss(C, B, A_batch, cgen):
    G = torch.randn(B, C, C, device="cuda", generator=cgen)
    A = torch.randn(A_batch, C, C, device="cuda", generator=cgen)
    loss, D = cuda_ops.style_loss(G, A, 0.37, 1.9, loss_out=_nan((B,)), D_out=_nan((B, C, C)))
    diff = G - A
    loss_ref, D_ref = K.style_loss_reference(G, A, 0.37, 1.9)
    _check(loss, 0.37 * (diff * diff).sum(dim=(1, 2)), loss_ref, f"style loss C={C}")
    _check(D, 1.9 * diff, D_ref, f"style D C={C}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_style_feature_grad(dtype, cgen):
    D = torch.randn(3, 64, 64, device="cuda", generator=cgen)
    F = torch.randn(3, 64, 97, device="cuda", generator=cgen).to(dtype)
    out = cuda_ops.style_feature_grad(D, F)
    assert out.dtype == dtype
    _check(out, torch.bmm(D.to(dtype), F), K.style_feature_grad_reference(D, F), "style feature grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("C,M", [(3, 1), (3, 4097), (64, 97), (513, 97), (64, 4097)])
@pytest.mark.parametrize("P_batch_one", [True, False])
def test_content_loss(dtype, B, C, M, P_batch_one, cgen):
    F = torch.randn(B, C, M, device="cuda", generator=cgen).to(dtype)
    P = torch.randn(1 if P_batch_one else B, C, M, device="cuda", generator=cgen).to(dtype)
    loss, grad = cuda_ops.content_loss(F, P, loss_out=_nan((B,)), grad_out=_nan(F.shape, dtype))
    loss_ref, grad_ref = K.content_loss_reference(F, P)
    diff = F - P
    _check(loss, 0.5 * (diff * diff).flatten(1).sum(1), loss_ref, f"content loss {dtype}")
    _check(grad, diff, grad_ref, f"content grad {dtype}")


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (3, 3, 1, 9), (1, 3, 8, 1), (3, 3, 97, 41), (1, 64, 33, 31)])
def test_tv_loss(shape, cgen):
    x = torch.rand(shape, device="cuda", generator=cgen)
    loss, grad = cuda_ops.tv_loss(x, loss_out=_nan((shape[0],)), grad_out=_nan(shape))
    loss_plain, grad_plain = K.tv_loss(x)  # the CPU implementation is plain torch, run on the GPU
    loss_ref, grad_ref = K.tv_loss_reference(x)
    _check(loss, loss_plain, loss_ref, f"tv loss {shape}")
    _check(grad, grad_plain, grad_ref, f"tv grad {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", ["both", "above", "loss"])
def test_relu_backward_accumulate(dtype, which, cgen):
    shape = (3, 513, 97)
    act = torch.randn(shape, device="cuda", generator=cgen).clamp_min(0).to(dtype)
    ga = torch.randn(shape, device="cuda", generator=cgen).to(dtype) if which != "loss" else None
    gl = torch.randn(shape, device="cuda", generator=cgen).to(dtype) if which != "above" else None
    out = cuda_ops.relu_backward_accumulate(ga, gl, act, out=_nan(shape, dtype))
    total = ga if gl is None else (gl if ga is None else ga + gl)
    _check(out, total * (act > 0), K.relu_backward_accumulate_reference(ga, gl, act), f"relu bwd {dtype}")


def test_launchers_validate_arguments():
    F = torch.randn(2, 8, 16, device="cuda")
    with pytest.raises(ValueError, match="contiguous"):
        cuda_ops.gram(F.transpose(1, 2))
    with pytest.raises(TypeError, match="float32"):
        cuda_ops.gram(F.to(torch.float64))
    with pytest.raises(ValueError, match="CUDA tensor"):
        cuda_ops.style_loss(torch.zeros(2, 8, 8, device="cuda"), torch.zeros(1, 8, 8), 1.0, 1.0)
    with pytest.raises(ValueError, match="out must be"):
        cuda_ops.gram(F, out=torch.empty(2, 8, 8, dtype=torch.float16, device="cuda"))
    with pytest.raises(TypeError, match="dtype"):
        cuda_ops.content_loss(F, F.half())


def test_loss_kernels_capture_in_cuda_graph(cgen):
    """Every launcher (two launches each for the reductions, workspaces allocated from the
    graph's pool) captured and replayed gives the eager bits."""
    F = torch.randn(2, 64, 4109, device="cuda", generator=cgen)
    P = torch.randn(1, 64, 4109, device="cuda", generator=cgen)

    def step():
        G = cuda_ops.gram(F)
        loss, D = cuda_ops.style_loss(G, G[:1].contiguous(), 0.5, 2.0)
        c, g = cuda_ops.content_loss(F, P)
        return [G, loss, D, c, g]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compile and load modules outside the capture
        eager = step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, eager):
        assert torch.equal(a, b)
