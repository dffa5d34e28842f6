"""A run whose loss becomes non-finite is never returned as a result: it raises, stops at once,
or hands back its last finite iterate (``on_diverge``), in the API, the CUDA loop and across scales."""
import math

import pytest
import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.backends.base import Evaluation
from stylegrad.errors import DivergedError


SMALL = dict(weights="random", backend="reference", size=16, iters=10, lbfgs_history=5)


def _nan_after(backend, calls_ok, per_image=None):
    """Make ``backend.evaluate`` return a NaN loss from call ``calls_ok`` on (for image b from
    call ``per_image[b]`` when given); returns the list of calls made."""
    real = backend.evaluate
    calls = []

    def evaluate(img, targets):
        ev = real(img, targets)
        n = len(calls)
        calls.append(n)
        starts = per_image or [calls_ok] * img.shape[0]
        bad = torch.tensor([n >= s for s in starts])
        nan = torch.full_like(ev.content, float("nan"))
        return Evaluation(torch.where(bad, nan, ev.content), ev.style, ev.tv, ev.grad)

    backend.evaluate = evaluate
    return calls


def test_diverged_run_raises_stops_at_once_or_returns_the_last_finite_iterate():
    g = torch.Generator().manual_seed(0)
    c, s = torch.rand(3, 16, 12, generator=g), torch.rand(3, 14, 14, generator=g)
    st = Stylizer(StyleConfig(**SMALL, save_every=1))
    st.set_styles([s])
    calls = _nan_after(st.backend, 4)
    with pytest.raises(DivergedError) as e:
        st.run(c)
    err = e.value
    assert err.iteration == 4 and err.last_finite_iteration == 3 and math.isfinite(err.last_finite_loss)
    assert "iteration 4" in str(err) and err.result.image is None
    assert len(calls) == 5                     # stopped at the first non-finite loss, not 11 evaluations

    calls.clear()
    snaps = {}
    r = st.run(c, callback=lambda p: snaps.setdefault(p.iter, p.snapshot) if p.snapshot is not None else None,
               last_finite=True)
    assert r.status == "diverged" and "iteration 3" in r.message
    assert torch.isfinite(r.image).all() and torch.equal(r.image, snaps[3])

    # the one-call API raises the same typed error (never a NaN or black image)
    st2 = Stylizer(StyleConfig(**SMALL))
    _nan_after(st2.backend, 0)
    with pytest.raises(DivergedError) as e2:
        st2.stylize(c, [s])
    assert e2.value.iteration == 0 and e2.value.last_finite_iteration is None
    with pytest.raises(DivergedError):              # no finite iterate at all: still an error
        st2.run(c, last_finite=True)


def test_cuda_backend_loop_stops_at_the_first_non_finite_loss_and_reports_it():
    """The cuda backend's loop (on CPU tensors): losses are checked on the host at reports and
    every DIVERGENCE_CHECK_EVERY iterations; the first non-finite iteration of each image is
    reported exactly, and the loop stops when every image has one, as the eager loop does."""
    from stylegrad.backends.cuda_backend import DIVERGENCE_CHECK_EVERY, CudaBackend
    from stylegrad.run.optimize import optimize

    cfg = StyleConfig(weights="random", size=14, iters=40, print_every=100, lbfgs_history=5)
    st = Stylizer(cfg.replace(backend="reference"))
    g = torch.Generator().manual_seed(1)
    st.set_styles([torch.rand(3, 14, 14, generator=g)])
    x, t = st.prepare(torch.rand(2, 3, 14, 14, generator=g))
    cb = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    calls = _nan_after(cb, None, per_image=[2, 6])
    got = []
    cb.optimize(x, t, lambda k, ev, ms, xk: got.append((k, ev.total.tolist())))
    assert [k for k, _ in got] == [0, 2, 6]                  # iteration 0, then each image's first NaN
    assert math.isnan(got[1][1][0]) and math.isfinite(got[1][1][1]) and math.isnan(got[2][1][1])
    assert DIVERGENCE_CHECK_EVERY == 10
    assert len(calls) == 10 < cfg.iters                      # stopped at the next check (iteration 9)
    # the eager loop over the same evaluations reports the same iteration and stops there
    cb2 = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    calls2 = _nan_after(cb2, None, per_image=[2, 6])
    eager = []
    optimize(x, lambda img: cb2.evaluate(img, t), cb2.config, lambda k, ev, ms, xk: eager.append(k))
    assert eager[-1] == 6 and len(calls2) == 7


def test_last_finite_with_coarse_to_fine_returns_a_full_size_image():
    """last_finite across scales (min_size): an image that diverges in the first scale comes back
    with that scale's last finite iterate upsampled to the output size (with the content's
    chroma under original_colors), and the message names the scale."""
    g = torch.Generator().manual_seed(3)
    c, s = torch.rand(3, 32, 24, generator=g), torch.rand(3, 14, 14, generator=g)
    cfg = StyleConfig(**{**SMALL, "size": 32, "iters": 6}, min_size=16, original_colors="postprocess")
    st = Stylizer(cfg)
    st.set_styles([s])
    _nan_after(st.backend, 3)                      # calls 0..2 finite: scale 1 diverges at iteration 3
    with pytest.raises(DivergedError):
        st.run(c)
    st2 = Stylizer(cfg)
    st2.set_styles([s])
    _nan_after(st2.backend, 3)
    r = st2.run(c, last_finite=True)
    assert r.status == "diverged" and r.message.startswith("scale 1 of 3 (12x16)") and "(iteration 2 of scale 1)" in r.message
    assert tuple(r.image.shape) == (3, 32, 24) and torch.isfinite(r.image).all()
    assert r.image.min() >= 0 and r.image.max() <= 1
