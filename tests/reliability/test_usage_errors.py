"""Usage errors: one line on stderr, exit 2, before any work -- never an internal error and
never a silent "ok" (README "Reliability")."""
import pytest
import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.cli import main
from stylegrad.errors import ConfigError, StalledError
from stylegrad.stylizer import Progress, check_progress
from tests.helpers import EXAMPLES

FAST = ["--weights", "random", "--backend", "torch", "--quiet", "--size", "16", "--iters", "3"]


def _stylize(tmp_path, *extra):
    return ["stylize", str(EXAMPLES / "content.png"), "--style", str(EXAMPLES / "style.png"),
            "-o", str(tmp_path / "out.png")] + FAST + list(extra)


def _usage_error(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("stylegrad: error:") and "internal error" not in err, err
    for n in needles:
        assert n in err, err
    return err


# -- item: nothing to optimise is refused, a loss that never fell is not ok -------------------------

@pytest.mark.parametrize("extra", [
    ["--style-weight", "0"],                                    # from the photo: loss 0, nothing moves
    ["--style-weight", "0", "--tv-weight", "0", "--content-weight", "0", "--init", "noise"],
    ["--style-layers", "relu1_1:0,relu2_1:0", "--init", "content"],
])
def test_nothing_to_optimise_is_a_usage_error_and_writes_nothing(tmp_path, capsys, extra):
    _usage_error(capsys, _stylize(tmp_path, *extra), "nothing to optimise")
    assert not (tmp_path / "out.png").exists()


def test_nothing_to_optimise_is_a_config_error_in_the_api():
    with pytest.raises(ConfigError, match="nothing to optimise"):
        StyleConfig(style_weight=0.0)
    # what can move the image is allowed: the paper's reconstructions, and TV alone
    StyleConfig(style_weight=0.0, init="noise")
    StyleConfig(content_weight=0.0, init="noise")
    StyleConfig(style_weight=0.0, tv_weight=1e-3)


def _history(losses):
    return [Progress("x", i, len(losses) - 1, v, v, 0.0, 0.0, 1.0) for i, v in enumerate(losses)]


def test_a_loss_that_never_fell_is_not_ok():
    assert check_progress(_history([0.0, 0.0]), "content", moved=0.0)[0] == "stalled"
    assert check_progress(_history([0.0, 0.0]), "noise", moved=0.3)[0] == "stalled"
    assert check_progress(_history([5.0, 5.0, 5.0]), "start.png", moved=0.3)[0] == "stalled"
    assert check_progress(_history([5.0, 6.0, 5.0]), "start.png", moved=0.3)[0] == "stalled"
    assert check_progress(_history([5.0, 6.0, 4.0]), "start.png", moved=0.3)[0] == "ok"


def test_a_run_whose_loss_is_zero_from_the_start_raises():
    """A user's --init equal to the content, with only the content term: loss 0 at iteration 0."""
    s = Stylizer(StyleConfig(weights="random", backend="torch", size=16, iters=3, style_weight=0.0,
                             init=str(EXAMPLES / "content.png")))
    try:
        with pytest.raises(StalledError, match="nothing to optimise"):
            s.run(EXAMPLES / "content.png", [EXAMPLES / "style.png"])
    finally:
        s.close()


# -- item: --devices ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,why", [
    (",", "an empty entry"),
    ("0,,1", "is not cuda:N"),
    ("cuda:0,,cuda:1", "an empty entry"),
    ("-1", "is not cuda:N"),
    ("cuda:0,cuda:0", "cuda:0 twice"),
    ("cuda:1,cuda:01", "cuda:1 twice"),
    ("cpu,cuda:0", "cpu in a list"),
    ("cuda", "is not cuda:N"),
    ("", "an empty entry"),
])
def test_bad_device_lists_are_usage_errors_saying_what_a_list_looks_like(tmp_path, capsys, spec, why):
    argv = ["stylize", str(EXAMPLES / "content.png"), "--style", str(EXAMPLES / "style.png"),
            "--out-dir", str(tmp_path / "o"), "--devices", spec] + FAST
    _usage_error(capsys, argv, why, "cuda:0,cuda:1")
    assert not (tmp_path / "o").exists()


# -- item: seeds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [str(2 ** 70), str(2 ** 63), "-5"])
def test_seeds_out_of_range_are_usage_errors(tmp_path, capsys, seed):
    _usage_error(capsys, _stylize(tmp_path, "--init", "noise", "--seed", seed), "--seed must be an integer from 0")


# -- item: mistyped flags get a suggestion ------------------------------------------------------------

@pytest.mark.parametrize("argv,typo,meant", [
    (["stylize", "c.png", "--style", "s.png", "-o", "o.png", "--iter", "5"], "--iter", "--iters"),
    (["stylize", "c.png", "--stlye", "s.png", "-o", "o.png"], "--stlye", "--style"),
    (["stylize", "c.png", "--style", "s.png", "-o", "o.png", "--style-wieght=3"], "--style-wieght", "--style-weight"),
    (["job", "status", "d", "--verfy"], "--verfy", "--verify"),
    (["bench", "--repeats", "2"], "--repeats", "--repeat"),
    (["export", "--out", "d", "--opste", "17"], "--opste", "--opset"),
    (["kernels", "check", "--emulte"], "--emulte", "--emulate"),
    (["info", "--jsno"], "--jsno", "--json"),
    (["--verison"], "--verison", "--version"),
])
def test_mistyped_flags_get_did_you_mean(capsys, argv, typo, meant):
    _usage_error(capsys, argv, f"unrecognized arguments: {typo}; did you mean {meant}?")


def test_mistyped_neural_style_flags_get_did_you_mean(capsys):
    _usage_error(capsys, ["neural-style", "-content_image", "c.png", "-style_image", "s.png", "-num_iteration", "5"],
                 "did you mean -num_iterations?")
    _usage_error(capsys, ["neural-style", "-content_imag", "c.png"], "did you mean -content_image?")


def test_a_flag_with_no_close_match_says_where_the_flags_are_listed(capsys):
    _usage_error(capsys, ["stylize", "c.png", "--style", "s.png", "-o", "o.png", "--zzzzzz"],
                 "unrecognized arguments: --zzzzzz (stylegrad stylize --help lists them)")
