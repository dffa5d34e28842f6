"""The stylize options come from StyleConfig's field declarations: defaults, choices, parsing."""
import dataclasses

import pytest

from stylegrad.backends.registry import backend_names
from stylegrad.cli.main import build_parser, main
from stylegrad.cli.options import config_from_args
from stylegrad.config import StyleConfig, field_flag
from stylegrad.model.vgg import MODELS

BASE = ["stylize", "c.png", "--style", "s.png", "-o", "o.png"]


def _parse(*extra):
    return build_parser().parse_args(BASE + list(extra))


def _option(flag):
    sub = build_parser()._subparsers._group_actions[0].choices["stylize"]
    return next(a for a in sub._actions if flag in a.option_strings)


def test_no_options_give_the_config_defaults():
    assert config_from_args(_parse()) == StyleConfig()


def test_every_cli_field_has_its_option_and_help():
    for f in dataclasses.fields(StyleConfig):
        if f.metadata.get("cli", True):
            a = _option(field_flag(f))
            assert a.dest == f.name and a.help


def test_values_reach_the_config():
    cfg = config_from_args(_parse("--size", "64", "--lr", "0.5", "--optimizer", "adam", "--style-weight", "3",
                                  "--style-layers", "relu1_1:0.2,relu2_1:0.8", "--content-layers", "relu3_1",
                                  "--style-blend-weights", "1, 2", "--lbfgs-history", "7", "--print-every", "4"))
    assert cfg == StyleConfig(size=64, lr=0.5, optimizer="adam", style_weight=3.0, style_layers=("relu1_1", "relu2_1"),
                              style_layer_weights=(0.2, 0.8), content_layers=("relu3_1",),
                              style_blend_weights=(1.0, 2.0), lbfgs_history=7, print_every=4)


def test_choices_have_one_owner():
    assert tuple(_option("--backend").choices) == ("auto",) + backend_names()
    assert tuple(_option("--model").choices) == MODELS


@pytest.mark.parametrize("argv,needle", [
    (["--iter", "5"], "unrecognized arguments: --iter"),               # no abbreviations
    (["--style-layers", "relu1_1:x"], "bad layer weight"),
    (["--style-layers", "relu1_1:1,relu2_1"], "a weight for every layer or for none"),
    (["--style-blend-weights", "1,a"], "comma-separated numbers"),
    (["--backend", "tpu"], "invalid choice"),
])
def test_bad_option_text_is_a_one_line_usage_error(capsys, argv, needle):
    assert main(BASE + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_new_options_reach_the_config():
    cfg = config_from_args(_parse("--min-size", "128", "--iters-last", "50", "--normalize-gradients",
                                  "--original-colors", "luminance"))
    assert (cfg.min_size, cfg.iters_last, cfg.normalize_gradients, cfg.original_colors) == (128, 50, True, "luminance")
    # the flag alone means postprocess (neural-style's -original_colors 1); absent, off
    assert config_from_args(build_parser().parse_args(BASE[:2] + ["--original-colors"] + BASE[2:])).original_colors \
        == "postprocess"
    assert config_from_args(_parse()).original_colors == "off"
    assert main(BASE + ["--original-colors", "yuv"]) == 2
