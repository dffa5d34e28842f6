"""``--normalize-gradients`` (neural-style's -normalize_gradients) in every backend, against an
autograd reference that normalises each term's feature gradient by hand.

The normalised direction is not the gradient of any loss (``stylegrad.terms.gradnorm``), so the
reference is built from its definition: in float64, ask autograd for each loss term's gradient
at its layer separately, divide it by its L1 norm per image and multiply by the term's
weight, sum per layer, and back-propagate those to the image through the same forward.

Tolerance 1e-5 relative, the argument of tests/test_backward.py (float32 against float64 here:
the float32 side rounds each of <= 16 conv backward sums of <= 4608 products, ~1e-7..5e-7
observed there); the normalisation adds one float32-accumulated L1 sum per term, ~1e-7
relative. A wrong normalisation (one norm for the whole batch, both terms of a shared layer
normalised together, the weight divided out) moves the gradient by far more: each case is
shown failing the bar below.
"""
import pytest
import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.backends.cuda_backend import CudaBackend
from stylegrad.backends.reference import ReferenceBackend
from stylegrad.backends.torch_backend import TorchBackend
from stylegrad.model import vgg as vggmod
from stylegrad.model.weights import random_vgg
from stylegrad.terms import losses
from stylegrad.terms.gradnorm import NORM_FLOOR
from stylegrad.terms.targets import Targets
from tests.helpers import rel_err

TOL = 1e-5

# relu3_1 carries a content and a style term: they must be normalised separately
CONTENT = ("relu3_1", "relu4_2")
STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu5_1")
SIZES = [(1, 37, 23), (2, 29, 40), (2, 7, 5), (1, 1, 1)]     # odd, not /16, shallow-only, 1 px

_VGG = random_vgg("vgg19", 0, "avg")


def _config(**kw):
    base = dict(weights="random", content_layers=CONTENT, style_layers=STYLE, content_layer_weights=(1.0, 0.5),
                style_weight=1e3, tv_weight=1e-2, normalize_gradients=True)
    return StyleConfig(**{**base, **kw})


def _case(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    content = torch.rand(n, 3, h, w, generator=g)
    style = torch.rand(1, 3, h + 3, w + 2, generator=g)
    ct = vggmod.forward(_VGG, content, CONTENT)
    st = {k: losses.gram(v) for k, v in vggmod.forward(_VGG, style, STYLE).items()}
    return x, Targets(ct, st)


def _by_hand(d, weight, per_image=True):
    dims = tuple(range(1, d.ndim)) if per_image else tuple(range(d.ndim))
    return weight * d / d.abs().sum(dim=dims, keepdim=True).clamp_min(NORM_FLOOR)


def reference_grad(cfg, x, targets, per_image=True, together=False):
    """float64 autograd, each term's feature gradient normalised by hand (see the docstring).
    ``per_image=False`` / ``together=True``: two wrong variants, to show the bar catches them."""
    vgg = _VGG.to(dtype=torch.float64)
    x = x.double().requires_grad_(True)
    feats = vggmod.forward(vgg, x, cfg.loss_layers())
    terms = []    # (layer, weight, weighted loss summed over the batch)
    for layer, w in cfg.active_content_layers().items():
        if layer in feats:
            wt = cfg.content_weight * w
            terms.append((layer, wt, wt * losses.content_loss(feats[layer], targets.content[layer].double()).sum()))
    for layer, w in cfg.active_style_layers().items():
        if layer in feats:
            wt = cfg.style_weight * w
            terms.append((layer, wt, wt * losses.style_layer_loss(feats[layer], targets.style[layer].double()).sum()))
    seeds = {}
    if together:   # wrong: one normalisation per layer for all its terms
        for layer in dict.fromkeys(l for l, _, _ in terms):
            total = sum(t for l, _, t in terms if l == layer)
            (d,) = torch.autograd.grad(total, feats[layer], retain_graph=True)
            seeds[layer] = _by_hand(d, 1.0, per_image)
    else:
        for layer, wt, term in terms:
            (d,) = torch.autograd.grad(term, feats[layer], retain_graph=True)
            seeds[layer] = seeds.get(layer, 0) + _by_hand(d, wt, per_image)
    layers = list(seeds)
    (grad,) = torch.autograd.grad([feats[l] for l in layers], x, grad_outputs=[seeds[l] for l in layers],
                                  retain_graph=True)
    if cfg.tv_weight > 0:   # the TV term is not normalised (neither is neural-style's)
        (gt,) = torch.autograd.grad(cfg.tv_weight * losses.tv_loss(x).sum(), x)
        grad = grad + gt
    return grad


def _backends(cfg):
    yield "reference", ReferenceBackend(_VGG, cfg, "cpu")
    yield "torch", TorchBackend(_VGG, cfg, "cpu")
    yield "cuda (CPU loop, torch kernels)", CudaBackend(_VGG, cfg, torch.device("cpu"), use_cuda_kernels=False)


@pytest.mark.parametrize("n,h,w", SIZES)
def test_every_backend_matches_the_hand_normalised_autograd_reference(n, h, w):
    cfg = _config()
    x, targets = _case(n, h, w, seed=h * w)
    want = reference_grad(cfg, x, targets)
    plain = ReferenceBackend(_VGG, cfg.replace(normalize_gradients=False), "cpu").evaluate(x, targets)
    for name, backend in _backends(cfg):
        got = backend.evaluate(x, targets)
        assert rel_err(got.grad, want) <= TOL, f"{name} {n}x{h}x{w}: {rel_err(got.grad, want):.2e}"
        # the losses reported are the ordinary weighted terms
        assert rel_err(got.total, plain.total) <= TOL, name
    if (h, w) != (1, 1):
        assert rel_err(plain.grad, want) > 0.1      # the option changes the direction


def test_onnxruntime_backend_matches_too(tmp_path):
    pytest.importorskip("onnxruntime")
    from stylegrad.backends.onnxruntime_backend import OnnxRuntimeBackend

    cfg = _config()
    x, targets = _case(2, 29, 40, seed=5)
    got = OnnxRuntimeBackend(_VGG, cfg, "cpu", cache_dir=tmp_path).evaluate(x, targets)
    # avg pooling: no max-pool ties; a ReLU input within rounding of 0 could still flip (see
    # tests/test_onnxruntime_backend.py), which would show as an error far above 1e-5
    assert rel_err(got.grad, reference_grad(cfg, x, targets)) <= TOL


def test_the_bar_catches_wrong_normalisations():
    cfg = _config()
    x, targets = _case(2, 29, 40, seed=1)
    got = TorchBackend(_VGG, cfg, "cpu").evaluate(x, targets).grad
    assert rel_err(got, reference_grad(cfg, x, targets)) <= TOL
    assert rel_err(got, reference_grad(cfg, x, targets, per_image=False)) > 100 * TOL
    assert rel_err(got, reference_grad(cfg, x, targets, together=True)) > 100 * TOL


def test_each_term_enters_its_layer_with_l1_norm_equal_to_its_weight():
    """What the normalisation means, on one term alone: the feature gradient's L1 norm per
    image is the weight, whatever the loss's scale (neural-style's +1e-8 in the denominator
    would make the 1e-3 case depend on the loss's normalisation; ours does not)."""
    from stylegrad.terms.objective import feature_losses_and_grads

    x, targets = _case(2, 29, 40, seed=2)
    for sw in (1e-6, 1e-3, 1e9):
        cfg = StyleConfig(weights="random", content_weight=0.0, style_layers=("relu2_1",), style_weight=sw,
                          normalize_gradients=True)
        feats = vggmod.forward(_VGG, x, ("relu2_1",))
        _, _, grads = feature_losses_and_grads(feats, targets, cfg)
        norms = grads["relu2_1"].abs().flatten(1).sum(1)
        assert torch.allclose(norms, torch.full_like(norms, sw), rtol=1e-5)


def test_zero_gradient_stays_zero():
    """From the content image the content term's gradient is exactly 0 -- the content targets
    come from the same backend's forward, bit for bit -- and 0 / floor = 0: no NaN, and no
    rounding noise blown up to the term's full weight."""
    # init noise: from the content with only the content term StyleConfig refuses a run (nothing
    # to optimise); this test evaluates the gradient at the content image itself
    cfg = _config(style_weight=0.0, tv_weight=0.0, init="noise")
    x, targets = _case(1, 24, 24, seed=3)
    for name, backend in _backends(cfg):
        own = Targets({k: v.clone() for k, v in backend.features(x, CONTENT).items()}, targets.style)
        g = backend.evaluate(x, own).grad
        assert torch.isfinite(g).all() and g.abs().max() == 0, name


def test_a_run_with_normalised_gradients_lowers_the_loss():
    g = torch.Generator().manual_seed(4)
    c, s = torch.rand(3, 20, 24, generator=g), torch.rand(3, 26, 30, generator=g)
    st = Stylizer(StyleConfig(weights="random", backend="torch", size=24, iters=15, normalize_gradients=True))
    r = st.run(c, [s])
    assert r.final_loss < 0.7 * r.initial_loss
