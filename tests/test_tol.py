"""``--tol``: a scale stops once its loss fell by less than TOL (relative) over --tol-window
iterations; the picture is the one a run of that many iterations gives."""
import pytest
import torch

from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError, StyleGradError
from stylegrad.run.optimize import converged
from stylegrad.run.stylizer import Stylizer


def test_the_rule():
    cfg = StyleConfig(tol=0.1, tol_window=2)
    t = [torch.tensor([100.0, 50.0]), torch.tensor([95.0, 49.0]), torch.tensor([91.0, 46.0])]
    assert not converged(t[:2], cfg)                 # not yet a window's worth
    assert converged(t, cfg)                         # 9% and 8% over 2 iterations: both below 10%
    t[-1] = torch.tensor([91.0, 44.0])               # image 2 fell 12%: the batch goes on
    assert not converged(t, cfg)
    assert not converged(t[:2] + [torch.tensor([89.0, 46.0])], cfg)   # image 1 fell 11%
    assert not converged([torch.tensor([float("nan")])] * 3, cfg)
    assert not converged(t, StyleConfig())           # no --tol: never
    with pytest.raises(ConfigError, match="--tol"):
        StyleConfig(tol=-1.0)
    with pytest.raises(ConfigError, match="--tol-window"):
        StyleConfig(tol_window=0)


def _run(**kw):
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(3, 24, 24, generator=g), torch.rand(3, 24, 24, generator=g)
    s = Stylizer(StyleConfig(size=24, weights="random:1", style_weight=1e4, **kw))
    s.set_styles([style])
    return s.run(content)


def test_a_converged_run_stops_with_the_picture_of_that_many_iterations():
    stopped = _run(iters=60, tol=0.05, tol_window=3)
    last = stopped.history[-1]
    assert last.stopped and 3 <= last.iter < 60 and stopped.status == "ok"
    same = _run(iters=last.iter)                     # no --tol, exactly that many iterations
    assert same.final_loss == pytest.approx(last.loss, rel=1e-6)
    assert torch.allclose(stopped.image, same.image, atol=1e-6)
    full = _run(iters=60)
    assert not full.history[-1].stopped and full.history[-1].iter == 60


def test_cuda_backend_refuses_tol(monkeypatch):
    monkeypatch.setenv("STYLEGRAD_EMULATE", "1")
    with pytest.raises(StyleGradError, match="--tol"):
        Stylizer(StyleConfig(size=16, weights="random", backend="cuda", device="cpu", tol=0.01))
