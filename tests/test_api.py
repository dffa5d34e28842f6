"""The Python API: Stylizer reuse, input/output types, callbacks, reconstructions, options."""
import numpy as np
import pytest
import torch
from PIL import Image

from stylegrad import Progress, StyleConfig, Stylizer, stylize
from stylegrad.errors import ConfigError
import stylegrad

SMALL = dict(weights="random", backend="reference", size=24, iters=8)


def _imgs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 20, 24, generator=g), torch.rand(3, 30, 26, generator=g)


def test_config_is_frozen_and_validated():
    c = StyleConfig()
    with pytest.raises(Exception):
        c.size = 3
    assert c.replace(size=64).size == 64 and c.size == 512
    with pytest.raises(ConfigError, match="unknown option"):
        c.replace(colour=1)
    with pytest.raises(ConfigError, match="layer weight"):
        StyleConfig(style_layers=("relu1_1",), style_layer_weights=(1.0, 2.0))
    with pytest.raises(ConfigError, match="--optimizer"):
        StyleConfig(optimizer="sgd")


def test_stylize_returns_the_input_type():
    c, s = _imgs()
    out_t = stylize(c, s, **SMALL)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (3, 20, 24)
    pil = Image.fromarray((c.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    out_p = stylize(pil, [s], **SMALL)
    assert isinstance(out_p, Image.Image) and out_p.size == (24, 20)
    out_n = stylize(np.asarray(pil), s, **SMALL)
    assert isinstance(out_n, np.ndarray) and out_n.dtype == np.uint8 and out_n.shape == (20, 24, 3)


def test_callback_and_history():
    c, s = _imgs(1)
    seen = []
    r = Stylizer(StyleConfig(**SMALL)).run(c, [s], callback=seen.append, name="photo")
    assert [p.iter for p in seen] == list(range(9)) and all(isinstance(p, Progress) for p in seen)
    assert seen[0].image == "photo" and seen[-1].snapshot is not None and seen[3].snapshot is None
    assert all(p.snapshot is None for p in r.history)          # no images kept in the history
    assert r.history == seen and r.final_loss < seen[0].loss
    assert torch.allclose(seen[-1].snapshot, r.image)


def test_stylizer_is_reusable_and_caches_style_targets(monkeypatch):
    c, s = _imgs(2)
    st = Stylizer(StyleConfig(**SMALL))
    st.set_styles([s])
    calls = []
    real = st.backend.features
    monkeypatch.setattr(st.backend, "features", lambda img, layers: calls.append(tuple(img.shape)) or real(img, layers))
    a = st.run(c)
    n_first = len(calls)
    b = st.run(c.flip(-1))
    # second image of the same size: only the probe and the content features, no style forward
    assert len(calls) - n_first == n_first - 1
    assert a.image.shape == b.image.shape


def test_content_only_reconstruction_from_noise():
    """The paper's Fig. 1 content reconstruction: style weight 0, white-noise init."""
    c, s = _imgs(3)
    cfg = StyleConfig(weights="random", backend="reference", size=24, iters=40, style_weight=0.0, init="noise",
                      content_layers=("relu2_1",))
    r = Stylizer(cfg).run(c, [s])
    assert r.history[-1].style == 0.0
    assert r.final_loss < 0.05 * r.history[0].loss
    noise = torch.rand(c.shape, generator=torch.Generator().manual_seed(0))
    assert (r.image - c).abs().mean() < (noise - c).abs().mean()   # moved toward the photo


def test_style_only_reconstruction_from_noise():
    c, s = _imgs(4)
    cfg = StyleConfig(weights="random", backend="reference", size=24, iters=30, content_weight=0.0, init="noise",
                      style_layers=("relu1_1", "relu2_1"))
    r = Stylizer(cfg).run(c, [s])
    assert r.history[-1].content == 0.0 and r.final_loss < 0.05 * r.history[0].loss


def test_blend_weights_interpolate_targets():
    c, s1 = _imgs(5)
    s2 = torch.rand(3, 30, 26, generator=torch.Generator().manual_seed(9))
    cfg = StyleConfig(**SMALL)
    st = Stylizer(cfg.replace(style_blend_weights=(3.0, 1.0)))
    st.set_styles([s1, s2])
    tb = st.prepare(c)[1].style
    st2 = Stylizer(cfg)
    st2.set_styles([s2])
    t2 = st2.prepare(c)[1].style
    st1 = Stylizer(cfg)
    st1.set_styles([s1])
    t1 = st1.prepare(c)[1].style
    for l in cfg.style_layers:
        if l in tb:
            assert torch.allclose(tb[l], 0.75 * t1[l] + 0.25 * t2[l], rtol=1e-5, atol=1e-6)


def test_style_scale_and_gram_rescaling(monkeypatch):
    """The painting is resized to content size * style scale; its Gram is rescaled by M / M_s."""
    from stylegrad.terms import losses
    from stylegrad.terms.targets import style_targets

    seen = []

    def fake_features(img, layers):          # 2 channels of ones at the image's resolution
        seen.append(tuple(img.shape[-2:]))
        return {"relu1_1": torch.ones(1, 2, *img.shape[-2:])}

    style = torch.rand(1, 3, 10, 6)
    A = style_targets(fake_features, losses.gram, [style], [1.0], ["relu1_1"], {"relu1_1": 15})
    # G_s = M_s * ones(2,2) with M_s = 60; rescaled to M = 15 -> 15 * ones
    assert torch.allclose(A["relu1_1"], torch.full((1, 2, 2), 15.0))

    c = torch.rand(3, 32, 24)
    st = Stylizer(StyleConfig(weights="random", backend="reference", size=32, style_scale=0.5))
    st.set_styles([torch.rand(3, 40, 40)])
    monkeypatch.setattr(st.backend, "features", lambda img, layers: seen.append(tuple(img.shape[-2:]))
                        or {l: torch.ones(1, 4, 2, 2) for l in layers})
    seen.clear()
    st.prepare(c)
    assert (16, 16) in seen                  # longest side 32 * 0.5


def test_tiny_and_odd_sizes_and_adam_and_init_path(tmp_path):
    c, s = _imgs(7)
    for size in (1, 2, 7, 17):
        r = Stylizer(StyleConfig(**{**SMALL, "size": size, "iters": 3})).run(c, [s])
        assert max(r.image.shape[-2:]) == size and torch.isfinite(r.image).all()
    r = Stylizer(StyleConfig(**{**SMALL, "optimizer": "adam", "iters": 15})).run(c, [s])
    assert r.final_loss < r.history[0].loss
    p = tmp_path / "init.png"
    Image.fromarray(np.full((5, 5, 3), 128, np.uint8)).save(p)
    st = Stylizer(StyleConfig(**{**SMALL, "init": str(p)}))
    st.set_styles([s])
    x0 = st.initial_image(st.prepare(c)[0])          # the --init image, resized to the content's size
    assert torch.allclose(x0, torch.full_like(x0, 128 / 255), atol=1e-6)


def test_batch_reports_per_image():
    c, s = _imgs(8)
    st = Stylizer(StyleConfig(**SMALL))
    st.set_styles([s])
    res = st.run_batch([c, c.flip(-1), c.flip(-2)], names=["a", "b", "c"])
    assert [r.history[0].image for r in res] == ["a", "b", "c"]
    assert all(r.final_loss < r.history[0].loss for r in res)
    assert stylegrad.__version__


def test_per_image_style_targets():
    """A batch with one style per image: each image's targets are those it gets alone."""
    g = torch.Generator().manual_seed(11)
    c = [torch.rand(3, 20, 24, generator=g) for _ in range(2)]
    s = [torch.rand(3, 26, 30, generator=g) for _ in range(2)]
    cfg = StyleConfig(**SMALL)
    st = Stylizer(cfg)
    _, t = st.prepare(torch.stack(c), styles_per_image=[[s[0]], [s[1]]])
    for b in range(2):
        alone = Stylizer(cfg)
        alone.set_styles([s[b]])
        _, ta = alone.prepare(c[b])
        for l, A in ta.style.items():
            assert t.style[l].shape[0] == 2
            assert torch.allclose(t.style[l][b:b + 1], A, rtol=1e-6, atol=1e-6)
    res = st.run_batch(c, styles=[[s[0]], [s[1]]])
    assert all(r.final_loss < r.history[0].loss for r in res)
    with pytest.raises(ConfigError, match="style lists"):
        st.prepare(torch.stack(c), styles_per_image=[[s[0]]])


# ---------------------------------------------------------------------------------------------
# run verdicts: a failed run is never a silent "ok" with the photo
def _history(losses, every=1):
    from stylegrad.run.stylizer import Progress
    return [Progress("x", i * every, (len(losses) - 1) * every, v, v, 0.0, 0.0, 1.0) for i, v in enumerate(losses)]


def test_check_progress_verdicts():
    from stylegrad.run.stylizer import check_progress
    ok = _history([100.0, 40.0, 10.0], every=10)
    assert check_progress(ok, "content", moved=0.2) == ("ok", "")
    status, msg = check_progress(_history([100.0, float("nan"), float("nan")]), "content", 0.2)
    assert status == "diverged" and "iteration 1" in msg and "last finite loss 100 at iteration 0" in msg
    status, msg = check_progress(_history([100.0, 50.0, 1e30]), "noise", 0.2)
    assert status == "diverged" and "grew" in msg
    status, msg = check_progress(_history([100.0, 90.0, 60.0], every=10), "content", 0.2)
    assert status == "stalled" and "fell only" in msg
    # a user's own init may start near a minimum: little progress is fine, no change is not
    assert check_progress(_history([100.0, 90.0, 60.0], every=10), "start.png", 0.2)[0] == "ok"
    assert check_progress(_history([100.0, 99.99]), "start.png", 0.1 / 255)[0] == "stalled"
    # too few iterations to judge progress
    assert check_progress(_history([100.0, 90.0, 60.0], every=5), "content", 0.2)[0] == "ok"


def test_stalled_and_diverged_runs_raise_and_batches_keep_the_others():
    from stylegrad.errors import DivergedError, StalledError
    c, s = _imgs()
    # Adam with a step of 1e-12: the image cannot change -> stalled
    st = Stylizer(StyleConfig(**{**SMALL, "optimizer": "adam", "lr": 1e-12, "init": "noise"}))
    with pytest.raises(StalledError, match="did not change"):
        st.run(c, [s])
    # a huge Adam step: the loss grows -> diverged, with the last finite iteration
    st = Stylizer(StyleConfig(**{**SMALL, "optimizer": "adam", "lr": 1e4}))
    with pytest.raises(DivergedError) as e:
        st.run(c, [s])
    assert e.value.result.image is None and e.value.iteration == SMALL["iters"]
    # in a batch the verdict is per image: nothing raised, the failed image has no picture
    res = st.run_batch([c, c])
    assert [r.status for r in res] == ["diverged", "diverged"] and all(r.image is None for r in res)
    ok = Stylizer(StyleConfig(**SMALL)).run_batch([c], styles=[[s]])
    assert ok[0].status == "ok" and ok[0].image is not None
