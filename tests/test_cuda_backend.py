"""Backend ``cuda`` without a GPU: its loop on CPU tensors, with the torch implementations of the
kernels and -- under the CPU emulator (``STYLEGRAD_EMULATE=1``) -- with the CUDA kernels
themselves, eagerly; a scan of one iteration for host synchronisation. Graph capture, the
NVRTC-compiled kernels and bf16 on a GPU are in the ``gpu`` tests."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from stylegrad import StyleConfig, Stylizer, kernels
from stylegrad.backends.cuda_backend import CudaBackend
from stylegrad.backends.reference import ReferenceBackend
from stylegrad.errors import BackendUnavailableError, ConfigError
from stylegrad.kernels import emulator
from stylegrad.model.weights import random_vgg
from tests.helpers import rel_err

TOL = 1e-5   # float32: the hand-written backward vs autograd through the same NCHW forward


def _setup(cfg, n=1, h=23, w=18, seed=0):
    g = torch.Generator().manual_seed(seed)
    content = torch.rand(n, 3, h, w, generator=g)
    style = torch.rand(3, 21, 26, generator=g)
    st = Stylizer(cfg.replace(backend="reference"))
    st.set_styles([style])
    x, targets = st.prepare(content)
    return st, x, targets


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_evaluate_matches_reference_on_cpu(pool):
    cfg = StyleConfig(weights="random", pool=pool, size=23, tv_weight=1e-3)
    st, x, targets = _setup(cfg, n=2)
    cb = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    for k in range(3):
        xi = x + 0.05 * k * torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
        e, r = cb.evaluate(xi, targets), st.backend.evaluate(xi, targets)
        assert rel_err(e.grad, r.grad) <= TOL and rel_err(e.total, r.total) <= TOL


def test_graph_loop_reports_like_the_generic_loop():
    """The CUDA backend's own loop (capturable L-BFGS, losses kept on the device, reports every
    print_every) on CPU against the reference loop (torch.optim.LBFGS)."""
    cfg = StyleConfig(weights="random", size=23, iters=12, print_every=4, save_every=6)
    st, x, targets = _setup(cfg)
    cb = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    got, ref = [], []
    keep = lambda k: k > 0 and k % cfg.save_every == 0
    cb.optimize(x, targets, lambda k, ev, ms, xk: got.append((k, float(ev.total.sum()), xk)), keep)
    st.backend.optimize(x, targets, lambda k, ev, ms, xk: ref.append((k, float(ev.total.sum()), xk)), keep)
    assert [k for k, _, _ in got] == [0, 4, 6, 8, 12]
    assert [k for k, _, xk in got if xk is not None] == [6, 12]
    ref_loss = {k: l for k, l, _ in ref}
    # same iterates up to rounding: the first iterations agree tightly; later ones drift by
    # float32 rounding amplified through the curvature pairs (see tests/test_backward.py)
    assert got[0][1] == pytest.approx(ref_loss[0], rel=TOL)
    for k, l, _ in got[1:]:
        assert l == pytest.approx(ref_loss[k], rel=5e-2)
    assert got[-1][1] < 0.5 * got[0][1]
    # the snapshot at k=6 is the image whose loss is reported at k=6
    snap6 = [xk for k, _, xk in got if k == 6][0]
    assert float(st.backend.evaluate(snap6, targets).total.sum()) == pytest.approx(got[2][1], rel=1e-4)


def test_batch_is_independent_runs():
    """Per-image L-BFGS: a batch gives each image the run it would have alone."""
    cfg = StyleConfig(weights="random", size=20, iters=6)
    st, x, targets = _setup(cfg, n=3, h=20, w=17, seed=3)
    cb = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    xb = cb.optimize(x, targets)
    for b in range(3):
        t1 = type(targets)({k: v[b:b + 1] for k, v in targets.content.items()}, targets.style)
        x1 = cb.optimize(x[b:b + 1], t1)
        # float32 convolutions of a batch and of one image may round differently: 1e-4
        assert rel_err(xb[b:b + 1], x1) <= 1e-4


def test_cuda_backend_needs_a_gpu_here(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.delenv(emulator.ENV, raising=False)
    with pytest.raises((BackendUnavailableError, ConfigError), match="cuda"):
        Stylizer(StyleConfig(weights="random", backend="cuda", device="cpu"))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Stylizer(StyleConfig(weights="random", device="cuda"))


# -- GPU ------------------------------------------------------------------------------------------

def _gpu_run(precision, iters, size=64, kernels=True, graph=True, **kw):
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g)
    cfg = StyleConfig(weights="random", backend="cuda", device="cuda", size=size, iters=iters,
                      precision=precision, **kw)
    st = Stylizer(cfg)
    st.backend.use_graph = graph
    if not kernels:
        st.backend = CudaBackend(st.vgg, cfg, torch.device("cuda"), use_cuda_kernels=False)
    st.set_styles([style])
    x, t = st.prepare(content)
    out = st.backend.optimize(st.initial_image(x), t)
    score = lambda img: float(st.backend.evaluate(img, t).total.sum())
    return out, score, st.backend


@pytest.mark.gpu
def test_gpu_graph_is_captured_and_matches_eager():
    """The same operations replayed from a graph and run eagerly. The stylegrad kernels are
    deterministic (no atomics), so with cuDNN's deterministic algorithms the two runs are the
    same computation and must give the same bits after 30 iterations. Not verified on a GPU."""
    old = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        xg, score, b = _gpu_run("fp32", 30)
        assert b.graph_status == "captured", b.graph_status
        xe, _, be = _gpu_run("fp32", 30, graph=False)
    finally:
        torch.backends.cudnn.deterministic = old
    assert be.graph_status == "eager"
    assert torch.isfinite(xg).all()
    assert torch.equal(xg, xe)


@pytest.mark.gpu
def test_gpu_kernels_match_torch_ops_in_the_loop():
    xa, score, _ = _gpu_run("fp32", 10, kernels=True)
    xb, _, _ = _gpu_run("fp32", 10, kernels=False)
    assert score(xa) == pytest.approx(score(xb), rel=1e-3)


@pytest.mark.gpu
def test_gpu_bf16_reaches_fp32_loss():
    """The bf16 quality bar, scaled down for a test: bf16 ends within 2% of fp32, both scored by the
    fp32 objective (the full check, 500 iterations at 512^2, is in bench/gpu_check.py)."""
    x32, score32, _ = _gpu_run("fp32", 200, size=128)
    x16, _, _ = _gpu_run("bf16", 200, size=128)
    assert torch.isfinite(x16).all()
    assert score32(x16) == pytest.approx(score32(x32), rel=2e-2)


def test_batch_with_per_image_styles_is_independent_runs():
    """The cuda backend's per-image L-BFGS with per-image style targets: a batch gives each
    image the run it would have alone with its own painting (CPU, eager)."""
    g = torch.Generator().manual_seed(5)
    cs = [torch.rand(3, 18, 21, generator=g) for _ in range(2)]
    ss = [torch.rand(3, 20, 20, generator=g) for _ in range(2)]
    cfg = StyleConfig(weights="random", size=21, iters=5)
    st = Stylizer(cfg.replace(backend="reference"))
    x, t = st.prepare(torch.stack(cs), styles_per_image=[[ss[0]], [ss[1]]])
    cb = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    xb = cb.optimize(x, t)
    for b in range(2):
        one = Stylizer(cfg.replace(backend="reference"))
        one.set_styles([ss[b]])
        x1, t1 = one.prepare(cs[b])
        assert rel_err(xb[b:b + 1], cb.optimize(x1, t1)) <= 1e-4     # as test_batch_is_independent_runs


# -- the cuda loop with its CUDA kernels, in the CPU emulator ------------------------------------

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="the CPU emulator needs g++")


def _losses(backend, precision="fp32", size=48, iters=5, n=1, seed=0):
    """Per-iteration total losses (reported every iteration) and the final image of one run
    from --init noise, with random weights and random content/style images."""
    g = torch.Generator().manual_seed(seed)
    content = torch.rand(n, 3, size, size, generator=g)
    style = torch.rand(3, size, size, generator=g)
    cfg = StyleConfig(weights="random", size=size, iters=iters, init="noise", backend=backend, device="cpu",
                      print_every=1, precision=precision)
    with emulator.session():
        st = Stylizer(cfg)
        st.set_styles([style])
        x, t = st.prepare(content)
        got = []
        out = st.backend.optimize(st.initial_image(x), t, lambda k, ev, ms, xk: got.append(ev.total.clone()))
    return torch.stack(got), out, st.backend


@needs_gxx
def test_emulated_cuda_loop_matches_torch_backend_fp32():
    """The whole cuda loop (stylegrad.optim's L-BFGS, every kernel through the emulator) on the
    CPU, 5 iterations at 48 px from noise: each iteration's loss, and the final image's, within
    1e-4 of --backend torch. Measured: at most 3.3e-6 (the two differ in memory layout, NCHW vs
    channels-last, and in the kernels' float64 accumulation; against the torch backend run in
    NCHW the difference is at most 5e-7)."""
    cuda, _, backend = _losses("cuda")
    assert backend.ops is kernels.cuda_ops and backend.graph_status == "eager (cpu)"
    torch_cl, _, _ = _losses("torch")
    assert cuda.shape[0] == 6  # iterations 0..4, then the final image
    assert ((cuda - torch_cl).abs() / torch_cl.abs()).max().item() <= 1e-4
    assert cuda[-1].item() < 0.5 * cuda[0].item()


@needs_gxx
def test_emulated_cuda_loop_runs_bf16():
    losses, x, backend = _losses("cuda", precision="bf16")
    assert backend.ops is kernels.cuda_ops and backend.dtype == torch.bfloat16
    assert torch.isfinite(x).all() and torch.isfinite(losses).all()
    assert losses[-1].item() < 0.5 * losses[0].item()


@needs_gxx
@pytest.mark.slow
def test_emulated_cuda_batch_of_two_is_two_single_runs():
    both, xb, _ = _losses("cuda", n=2, size=32, iters=4, seed=4)
    g = torch.Generator().manual_seed(4)
    content = torch.rand(2, 3, 32, 32, generator=g)
    style = torch.rand(3, 32, 32, generator=g)
    cfg = StyleConfig(weights="random", size=32, iters=4, init="noise", backend="cuda", device="cpu", print_every=1)
    with emulator.session():
        st = Stylizer(cfg)
        st.set_styles([style])
        x, t = st.prepare(content)
        x0 = st.initial_image(x)
        for b in range(2):
            t1 = type(t)({k: v[b:b + 1] for k, v in t.content.items()}, t.style)
            x1 = st.backend.optimize(x0[b:b + 1], t1)
            # float32 convolutions of a batch and of one image may round differently: 1e-4
            assert rel_err(xb[b:b + 1], x1) <= 1e-4


@needs_gxx
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_host_sync_inside_the_captured_iteration(precision):
    """One iteration of the loop -- exactly the function the GPU path captures in a CUDA graph,
    run after one warm-up iteration as on a GPU -- contains no operation that would make the
    host wait for the device (see tests/sync_scan.py for what counts)."""
    sys.path.insert(0, os.path.dirname(__file__))
    from sync_scan import host_syncs

    g = torch.Generator().manual_seed(0)
    cfg = StyleConfig(weights="random", size=32, iters=4, init="noise", backend="cuda", device="cpu",
                      precision=precision)
    with emulator.session():
        st = Stylizer(cfg)
        st.set_styles([torch.rand(3, 32, 32, generator=g)])
        x, t = st.prepare(torch.rand(1, 3, 32, 32, generator=g))
        _, iteration, _ = st.backend.loop_state(st.initial_image(x), t)
        iteration()  # warm-up (eager on a GPU too)
        found = host_syncs(iteration)
        assert host_syncs(lambda: torch.zeros(1).item()) == ["torch.item", "aten::_local_scalar_dense"]
    assert found == [], f"host synchronisation inside the captured region: {sorted(set(found))}"


@needs_gxx
def test_cli_cuda_backend_on_cpu_needs_the_emulator(tmp_path):
    from tests.helpers import write_image

    c, s = write_image(tmp_path / "c.png", 20, 16), write_image(tmp_path / "s.png", 18, 18, seed=1)
    cmd = [sys.executable, "-m", "stylegrad.cli.main", "stylize", str(c), "--style", str(s), "--weights", "random",
           "--size", "20", "--iters", "2", "--backend", "cuda", "--device", "cpu", "--out-dir", str(tmp_path / "o"),
           "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != emulator.ENV}
    off = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert off.returncode == 2 and off.stderr.count("\n") == 1 and "STYLEGRAD_EMULATE=1" in off.stderr
    on = subprocess.run(cmd, capture_output=True, text=True, env={**env, emulator.ENV: "1"}, timeout=600)
    assert on.returncode == 0, on.stderr
    assert (tmp_path / "o" / "c.png").exists()
