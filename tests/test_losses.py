"""Loss terms by hand, the whole loss against an independent float64 computation, and the
image gradient against finite differences."""
import math

import numpy as np
import pytest
import torch

from stylegrad import StyleConfig
from stylegrad.backends.reference import ReferenceBackend
from stylegrad.model.vgg import IMAGENET_MEAN, IMAGENET_STD, forward, layer_specs
from stylegrad.model.weights import random_vgg
from stylegrad.terms import losses
from stylegrad.terms.targets import Targets


def test_content_loss_by_hand():
    F = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    P = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]]]])
    # 1/2 * (1 + 0 + 4 + 9) = 7
    assert losses.content_loss(F, P).tolist() == [7.0]


def test_gram_and_style_loss_by_hand():
    # N=2 channels, M=2 positions: F = [[1, 2], [0, 1]]
    F = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])
    G = losses.gram(F)
    assert G[0].tolist() == [[5.0, 2.0], [2.0, 1.0]]
    A = torch.tensor([[[4.0, 2.0], [2.0, 0.0]]])
    # sum (G-A)^2 = 1 + 0 + 0 + 1 = 2 ; / (4 * N^2 * M^2) = 2 / (4*4*4) = 1/32
    assert losses.style_layer_loss(F, A).item() == pytest.approx(1.0 / 32.0, rel=1e-7)


def test_tv_loss_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 1.0]]]])
    # vertical: (3-0)^2 + (1-1)^2 = 9 ; horizontal: (1-0)^2 + (1-3)^2 = 5
    assert losses.tv_loss(x).item() == 14.0
    assert losses.tv_loss(torch.ones(1, 3, 1, 1)).item() == 0.0


# ---------------------------------------------------------------------------------------------
# An independent float64 implementation in numpy (im2col convolution, explicit pooling).

def _np_conv3x3(x, w, b):
    C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, i:i + H, j:j + W] for i in range(3) for j in range(3)], axis=1)  # C,9,H,W
    wk = w.reshape(w.shape[0], C, 9)
    return np.einsum("okn,knhw->ohw", wk, cols) + b[:, None, None]


def _np_pool(x, kind):
    C, H, W = x.shape
    x = x[:, : H // 2 * 2, : W // 2 * 2].reshape(C, H // 2, 2, W // 2, 2)
    return x.mean(axis=(2, 4)) if kind == "avg" else x.max(axis=(2, 4))


def _np_features(vgg, img, layers, pool):
    x = (img - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
    out = {}
    for s in layer_specs(vgg.model):
        if s.kind == "conv":
            c = vgg.convs[s.name]
            x = _np_conv3x3(x, c.weight.double().numpy(), c.bias.double().numpy())
        elif s.kind == "relu":
            x = np.maximum(x, 0)
        else:
            x = _np_pool(x, pool)
        if s.name in layers:
            out[s.name] = x
        if len(out) == len(layers):
            return out
    return out


def _np_total(cfg, feats, P, A, img):
    total = 0.0
    for l, w in cfg.content_layer_weight_map().items():
        total += cfg.content_weight * w * 0.5 * np.sum((feats[l] - P[l]) ** 2)
    for l, w in cfg.style_layer_weight_map().items():
        f = feats[l].reshape(feats[l].shape[0], -1)
        N, M = f.shape
        total += cfg.style_weight * w * np.sum((f @ f.T - A[l]) ** 2) / (4.0 * N * N * M * M)
    total += cfg.tv_weight * (np.sum(np.diff(img, axis=1) ** 2) + np.sum(np.diff(img, axis=2) ** 2))
    return total


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_total_loss_matches_independent_float64(pool):
    cfg = StyleConfig(weights="random", pool=pool, content_layers=("relu2_2",),
                      style_layers=("relu1_1", "relu2_1", "relu3_1"), style_layer_weights=(0.5, 0.3, 0.2),
                      content_weight=0.7, style_weight=123.0, tv_weight=0.01)
    vgg = random_vgg("vgg19", seed=3, pool=pool).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    img, content, style = (torch.rand(1, 3, 13, 18, generator=g, dtype=torch.float64) for _ in range(3))
    layers = set(cfg.content_layers) | set(cfg.style_layers)
    Pn = _np_features(vgg, content[0].numpy(), layers, pool)
    Sn = _np_features(vgg, style[0].numpy(), layers, pool)
    An = {l: Sn[l].reshape(Sn[l].shape[0], -1) @ Sn[l].reshape(Sn[l].shape[0], -1).T for l in cfg.style_layers}
    expected = _np_total(cfg, _np_features(vgg, img[0].numpy(), layers, pool), Pn, An, img[0].numpy())

    backend = ReferenceBackend(vgg, cfg, torch.device("cpu"))
    targets = Targets({l: torch.from_numpy(Pn[l])[None] for l in cfg.content_layers},
                      {l: torch.from_numpy(An[l])[None] for l in cfg.style_layers})
    ev = backend.evaluate(img, targets)
    assert ev.total.dtype == torch.float64
    # Both float64: agreement to ~1e-12 relative; 1e-10 leaves room for summation order only.
    assert ev.total.item() == pytest.approx(expected, rel=1e-10)
    assert ev.content.item() > 0 and ev.style.item() > 0 and ev.tv.item() > 0


def test_image_gradient_matches_finite_differences():
    cfg = StyleConfig(weights="random", content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"),
                      content_weight=1.0, style_weight=50.0, tv_weight=0.1)
    vgg = random_vgg("vgg19", seed=5).to(dtype=torch.float64)
    backend = ReferenceBackend(vgg, cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    img, content, style = (torch.rand(1, 3, 7, 5, generator=g, dtype=torch.float64) for _ in range(3))
    P = forward(vgg, content, cfg.content_layers)
    S = forward(vgg, style, cfg.style_layers)
    targets = Targets(P, {l: losses.gram(S[l]) for l in cfg.style_layers})
    grad = backend.evaluate(img, targets).grad
    h = 1e-6
    idx = torch.randperm(img.numel(), generator=g)[:12]
    for i in idx.tolist():
        e = torch.zeros_like(img).view(-1)
        e[i] = h
        e = e.view_as(img)
        fd = (backend.evaluate(img + e, targets).total - backend.evaluate(img - e, targets).total).item() / (2 * h)
        # central differences in float64: truncation O(h^2) and rounding O(eps*|L|/h) ~ 1e-8 relative
        assert grad.view(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-7 * max(1.0, abs(fd)))
