"""The CPU emulator itself: CUDA semantics it models, and what it rejects like a device would.

Small test kernels (not in the registry) built from text; the shipped kernels are checked in
test_emulated_kernels.py and the mutants in test_emulator_mutants.py.
"""
import shutil

import numpy as np
import pytest
import torch

from stylegrad.kernels import cuda_ops, emulator, loader
from stylegrad.kernels.emulator import EmulatorError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")

I64 = np.int64


def _kernel(symbol):
    # all test kernels in one translation unit: one compile for the whole file
    return emulator.kernel_from_text("emulator_tests", emulator.with_common(ALL, "emulator_tests"), symbol, ALL_ENTRIES)


def _buf(t):
    return emulator.empty(t.shape, t.dtype).copy_(t)


SHFL = r"""
extern "C" __global__ void shfl(const float* in, float* x, float* down, float* up, float* idx, unsigned* ballot,
                                float* wsum) {
    const int t = threadIdx.x;
    const float v = in[t];
    x[t] = __shfl_xor_sync(0xffffffffu, v, 5);
    down[t] = __shfl_down_sync(0xffffffffu, v, 3);
    up[t] = __shfl_up_sync(0xffffffffu, v, 2, 16);
    idx[t] = __shfl_sync(0xffffffffu, v, 7);
    ballot[t] = __ballot_sync(0xffffffffu, v > 0.0f);
    wsum[t] = sg_warp_sum(v);
}
"""


def test_warp_shuffles_ballot_and_warp_sum_follow_cuda_semantics():
    k = _kernel("shfl")
    n = 64
    v = torch.randn(n, generator=torch.Generator().manual_seed(0))
    outs = [emulator.empty((n,), torch.float32) for _ in range(4)]
    ballot = emulator.empty((n,), torch.int32)
    wsum = emulator.empty((n,), torch.float32)
    vin = _buf(v)
    emulator.launch(k, (1,), n, [vin.data_ptr()] + [o.data_ptr() for o in outs] + [ballot.data_ptr(), wsum.data_ptr()])
    lane = torch.arange(n) % 32
    base = torch.arange(n) - lane
    src_down = torch.where(lane + 3 < 32, torch.arange(n) + 3, torch.arange(n))
    seg = lane // 16 * 16
    src_up = torch.where(lane - 2 >= seg, torch.arange(n) - 2, torch.arange(n))
    assert torch.equal(outs[0], v[base + (lane ^ 5)])
    assert torch.equal(outs[1], v[src_down])
    assert torch.equal(outs[2], v[src_up])
    assert torch.equal(outs[3], v[base + 7])
    for w in range(2):
        bits = sum(1 << i for i in range(32) if v[w * 32 + i] > 0)
        assert set(ballot[w * 32:(w + 1) * 32].tolist()) == {np.int32(np.uint32(bits))}
        # the butterfly sum: every lane the same total, close to the exact one
        assert torch.all(wsum[w * 32:(w + 1) * 32] == wsum[w * 32])
        assert wsum[w * 32].item() == pytest.approx(v[w * 32:(w + 1) * 32].double().sum().item(), abs=1e-5)


CVT = r"""
extern "C" __global__ void cvt(const sg_f16* h, float* f_of_h, const float* x, sg_f16* h_of_x, sg_bf16* b_of_x,
                               long long n, long long m) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        f_of_h[i] = sg_to_f32(h[i]);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < m; i += (long long)gridDim.x * blockDim.x) {
        h_of_x[i] = sg_from_f32<sg_f16>(x[i]);
        b_of_x[i] = sg_from_f32<sg_bf16>(x[i]);
    }
}
"""


def test_16_bit_conversions_match_torch_bit_for_bit():
    """The software replacements of the PTX cvt instructions against torch's conversions (both
    round to nearest even): every half value widened, and 400k floats narrowed, including
    ties, subnormals, overflow and the boundaries of both formats."""
    k = _kernel("cvt")
    halves = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    g = torch.Generator().manual_seed(1)
    specials = torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 65536.0, 6.1035156e-05, 5.96e-08, 2.98e-08,
                             2.9802322e-08, 1e-10, float("inf"), -float("inf"), 3.3895314e38, 3.4e38, 1.0 + 2**-8,
                             1.0 + 2**-11, 1.0 + 3 * 2**-11, 1.0 + 2**-9 + 2**-8])
    xs = torch.cat([specials, -specials, torch.randn(100000, generator=g) * 1e4, torch.randn(100000, generator=g),
                    torch.randn(100000, generator=g) * 1e-6,
                    torch.randint(-2**31, 2**31 - 1, (100000,), generator=g, dtype=torch.int32).view(torch.float32)])
    xs = xs[~xs.isnan()]
    n, m = halves.numel(), xs.numel()
    hd, xd = _buf(halves), _buf(xs)
    f_of_h = emulator.empty((n,), torch.float32)
    h_of_x = emulator.empty((m,), torch.int16)
    b_of_x = emulator.empty((m,), torch.int16)
    emulator.launch(k, (264,), 256, (hd.data_ptr(), f_of_h.data_ptr(), xd.data_ptr(), h_of_x.data_ptr(),
                                     b_of_x.data_ptr(), I64(n), I64(m)))
    want = halves.view(torch.float16).float()
    nan = want.isnan()
    assert torch.equal(f_of_h.isnan(), nan)
    assert torch.equal(f_of_h[~nan].view(torch.int32), want[~nan].view(torch.int32))  # -0.0 included
    assert torch.equal(h_of_x, xs.half().view(torch.int16))
    assert torch.equal(b_of_x, xs.bfloat16().view(torch.int16))
    nans = torch.tensor([float("nan")]).repeat(256)
    nd = _buf(nans)
    emulator.launch(k, (1,), 256, (hd.data_ptr(), f_of_h.data_ptr(), nd.data_ptr(), h_of_x.data_ptr(),
                                   b_of_x.data_ptr(), I64(0), I64(256)))
    assert h_of_x[:256].view(torch.float16).isnan().all() and b_of_x[:256].view(torch.bfloat16).isnan().all()


RACY = r"""
extern "C" __global__ void racy(float* out) {
    __shared__ float s[256];
    s[threadIdx.x] = (float)(blockIdx.x * 1000 + threadIdx.x);
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];  // no __syncthreads
}
extern "C" __global__ void synced(float* out) {
    __shared__ float s[256];
    s[threadIdx.x] = (float)(blockIdx.x * 1000 + threadIdx.x);
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
"""


def _run_schedules(symbol, schedules=(("forward", 0), ("reverse", 0), ("random", 1), ("random", 2))):
    k = _kernel(symbol)
    res = []
    for sched, seed in schedules:
        out = emulator.empty((4 * 64,), torch.float32)
        emulator.launch(k, (4,), 64, (out.data_ptr(),), emulator.Options(sched, seed))
        res.append(out)
    return res


def test_schedules_expose_a_missing_barrier_and_agree_on_a_synchronised_kernel():
    racy = _run_schedules("racy")
    assert not torch.equal(racy[0], racy[1])  # forward reads stale shared memory, reverse fresh
    synced = _run_schedules("synced")
    want = torch.tensor([b * 1000 + (t + 1) % 64 for b in range(4) for t in range(64)], dtype=torch.float32)
    for out in synced:
        assert torch.equal(out, want)


BARRIERS = r"""
extern "C" __global__ void early_return(float* x) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    x[threadIdx.x] = 1.0f;
}
extern "C" __global__ void split_barrier(float* x) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
}
extern "C" __global__ void warp_sum_partial(float* x) { x[threadIdx.x] = sg_warp_sum(x[threadIdx.x]); }
extern "C" __global__ void sum_needs_block(float* x) { x[threadIdx.x] = sg_block_sum(x[threadIdx.x]); }
extern "C" __global__ void three_args(float* x, int n, long long m) { if (threadIdx.x == 0) x[0] = (float)(n + m); }
extern "C" __global__ void __launch_bounds__(128) bounded(float* x) { x[threadIdx.x] = 2.0f; }
extern "C" __global__ void oob(float* x, long long at) { if (threadIdx.x == 0) x[at] = 1.0f; }
"""
ENTRIES = ("early_return", "split_barrier", "warp_sum_partial", "sum_needs_block", "three_args", "bounded", "oob")
ALL = SHFL + CVT + RACY + BARRIERS
ALL_ENTRIES = ("shfl", "cvt", "racy", "synced") + ENTRIES


def _k(symbol):
    return _kernel(symbol)


def test_barrier_not_reached_by_every_thread_is_rejected():
    x = emulator.empty((64,), torch.float32)
    with pytest.raises(EmulatorError, match=r"barrier not reached by all threads.*63 at __syncthreads.*1 returned"):
        emulator.launch(_k("early_return"), 1, 64, (x.data_ptr(),))
    with pytest.raises(EmulatorError, match="different __syncthreads"):
        emulator.launch(_k("split_barrier"), 1, 64, (x.data_ptr(),))


def test_warp_collective_over_missing_lanes_is_rejected():
    x = emulator.empty((48,), torch.float32).zero_()
    with pytest.raises(EmulatorError, match="only 16 threads"):
        emulator.launch(_k("warp_sum_partial"), 1, 48, (x.data_ptr(),))


def test_argument_sizes_and_count_must_match_the_parameters():
    x = emulator.empty((4,), torch.float32)
    k = _k("three_args")
    emulator.launch(k, 1, 32, (x.data_ptr(), np.int32(2), np.int64(3)))
    assert x[0].item() == 5.0
    with pytest.raises(EmulatorError, match=r"argument 2 is 4 bytes, but parameter 2 \(long long\) takes 8"):
        emulator.launch(k, 1, 32, (x.data_ptr(), np.int32(2), np.int32(3)))
    with pytest.raises(EmulatorError, match="takes 3 arguments, the launch passes 2"):
        emulator.launch(k, 1, 32, (x.data_ptr(), np.int32(2)))
    with pytest.raises(TypeError, match="numpy scalars"):
        emulator.launch(k, 1, 32, (x.data_ptr(), 2.0, np.int64(3)))


@pytest.mark.parametrize("grid,block,match", [
    ((1, 65536, 1), 32, "exceeds the device limits"),
    ((1, 1, 65536), 32, "exceeds the device limits"),
    ((2**31, 1, 1), 32, "exceeds the device limits"),
    (1, 1025, "1024 threads"),
    (1, (1, 1, 65), "z <= 64"),
    (1, 256, r"__launch_bounds__\(128\)"),
    ((0,), 32, "is 0"),
])
def test_grid_and_block_limits_are_rejected(grid, block, match):
    x = emulator.empty((1024,), torch.float32)
    with pytest.raises(EmulatorError, match=match):
        emulator.launch(_k("bounded"), grid, block, (x.data_ptr(),))


def test_launch_bounds_are_read_from_the_macro_expanded_source():
    x = emulator.empty((512,), torch.float32)
    with pytest.raises(EmulatorError, match=r"__launch_bounds__\(256\)"):
        emulator.launch(emulator.get_kernel("gram", "gram_tiled_bf16"), (1, 1, 1), 512,
                        (x.data_ptr(), x.data_ptr(), np.int32(1), I64(1), I64(32)))


@pytest.mark.parametrize("at,side", [(100, "after"), (-1, "before"), (355, "after")])
def test_canaries_catch_writes_outside_a_buffer(at, side):
    x = emulator.empty((100,), torch.float32)
    with pytest.raises(EmulatorError, match=f"oob wrote {side} a buffer of 100 elements"):
        emulator.launch(_k("oob"), 1, 32, (x.data_ptr(), I64(at)))


def test_outputs_start_poisoned_and_strict_mode_rejects_foreign_pointers():
    assert emulator.empty((3, 5), torch.bfloat16).isnan().all()
    plain = torch.zeros(100)
    with pytest.raises(EmulatorError, match="points outside every emulator buffer"):
        emulator.launch(_k("oob"), 1, 32, (plain.data_ptr(), I64(0)), emulator.Options(strict=True))


def test_ucontext_fallback_gives_the_same_bits():
    """The portable fiber switch (ucontext, used off x86-64) against the assembly one, on a
    kernel with block barriers and warp shuffles."""
    g = torch.Generator().manual_seed(3)
    F, P = _buf(torch.randn(3, 1000, generator=g)), _buf(torch.randn(1, 1000, generator=g))
    text = emulator.source_text("content_loss")
    res = []
    for flags in ((), ("-DSG_EMU_UCONTEXT",)):
        k = emulator.kernel_from_text("content_loss", text, "content_loss_f32",
                                      loader.SOURCES["content_loss"].entry_points, extra_flags=flags)
        grad = emulator.empty((3, 1000), torch.float32)
        parts = emulator.empty((3, 4), torch.float64)
        emulator.launch(k, (4, 3), 256, (F.data_ptr(), P.data_ptr(), grad.data_ptr(), parts.data_ptr(), I64(1000),
                                          I64(0)))
        res.append(parts)
    assert torch.equal(res[0], res[1])
    want = ((F - P).double() ** 2).sum(1)  # the difference rounds to float32 in the kernel too
    torch.testing.assert_close(res[0].sum(1), want, rtol=1e-12, atol=0)


def test_build_is_cached_by_source_hash(monkeypatch):
    first = emulator.build("relu_backward_accumulate")
    calls = []
    real = emulator.subprocess.run
    monkeypatch.setattr(emulator.subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert emulator.build("relu_backward_accumulate") == first
    assert all("--version" in a[0] for a in calls)  # no compile, at most the compiler's identity
    edited = emulator.source_text("relu_backward_accumulate") + "\n// edited\n"
    with emulator.source_override("relu_backward_accumulate", edited):
        assert emulator.build("relu_backward_accumulate") != first


def test_cuda_ops_run_on_cpu_tensors_only_when_emulating(monkeypatch):
    monkeypatch.delenv(emulator.ENV, raising=False)
    F = torch.randn(1, 3, 5)
    if not torch.cuda.is_available():
        with pytest.raises(loader.KernelUnavailableError, match="STYLEGRAD_EMULATE=1"):
            cuda_ops.gram(F)
    monkeypatch.setenv(emulator.ENV, "1")
    G = cuda_ops.gram(F)
    torch.testing.assert_close(G, F @ F.transpose(1, 2), rtol=1e-6, atol=1e-6)
    assert loader.sm_count("cpu") == 132


def test_launchers_validate_grid_limits_and_contiguity():
    with emulator.session():
        with pytest.raises(ValueError, match=r"gridDim.y = 70000 exceeds the CUDA limit of 65535.*split the batch"):
            cuda_ops.content_loss(torch.zeros(70000, 1), torch.zeros(1, 1))
        with pytest.raises(ValueError, match=r"gridDim.z = 65536 exceeds"):
            cuda_ops.gram(torch.zeros(65536, 1, 1))
        with pytest.raises(ValueError, match="contiguous"):
            cuda_ops.gram(torch.zeros(2, 8, 16).transpose(1, 2))


def test_no_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(loader.KernelUnavailableError, match="C\\+\\+ compiler"):
        emulator.build("relu_backward_accumulate")
