"""Usage errors: one line on stderr, exit 2, before any work -- never an internal error and
never a silent "ok" (README "Reliability")."""
import json

import pytest
import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.cli.main import build_parser, main
from stylegrad.errors import ConfigError, StalledError
from stylegrad.io import fileio
from stylegrad.run.stylizer import Progress, check_progress
import stylegrad
from tests.helpers import EXAMPLES, write_image

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


REFERENCE_FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5"]

def _json_lines(out):
    return [json.loads(l) for l in out.strip().splitlines()]


@pytest.mark.parametrize("flag,value", [("--style-weight", "inf"), ("--content-weight", "inf"), ("--tv-weight", "nan"),
                                        ("--lr", "inf"), ("--style-layers", "relu1_1:inf"),
                                        ("--content-layers", "relu4_2:nan"), ("--style-blend-weights", "1,inf"),
                                        ("--style-scale", "inf"), ("--max-memory", "0")])
def test_non_finite_option_values_are_refused_up_front(tmp_path, capsys, flag, value):
    c = write_image(tmp_path / "c.png", 8, 8)
    rc = main(["stylize", str(c), "--style", str(c), "-o", str(tmp_path / "o.png"), flag, value] + REFERENCE_FAST)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()


def test_output_folders_are_checked_before_any_compute(tmp_path, capsys, monkeypatch):
    c = write_image(tmp_path / "c.png", 8, 8)
    built = []
    monkeypatch.setattr(Stylizer, "__init__", lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    rc = main(["stylize", str(c), "--style", str(c), "-o", str(tmp_path / "typo_dir" / "x.png")] + REFERENCE_FAST)
    err = capsys.readouterr().err
    assert rc == 2 and "typo_dir does not exist" in err and err.count("\n") == 1 and not built
    ro = tmp_path / "ro"
    ro.mkdir()
    real = fileio.tempfile.mkstemp

    def read_only(*a, dir=None, **k):
        if str(dir) == str(ro):
            raise OSError(30, "Read-only file system")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    rc = main(["stylize", str(c), "--style", str(c), "--out-dir", str(ro), "--json"] + REFERENCE_FAST)
    cap = capsys.readouterr()
    assert rc == 2 and "Read-only file system" in cap.err and not built
    assert _json_lines(cap.out) == [{"status": "error", "error": cap.err.split("error: ", 1)[1].strip(), "exit_code": 2}]


@pytest.mark.parametrize("argv,needle", [
    (["stylize", "C", "--style", "missing.png", "-o", "o.png", "--json"], "missing.png"),
    (["stylize", "C", "--style", "C", "-o", "o.xyz", "--json"], "unknown extension"),
    (["stylize", "C", "--style", "C", "-o", "o.png", "--weights", "nope.pth", "--json"], "weights file not found"),
    (["stylize", "C", "--style", "C", "-o", "o.png", "--size", "x", "--json"], "invalid int"),
    (["info", "--json", "--frob"], "unrecognized arguments"),
])
def test_json_mode_puts_early_errors_on_stdout(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "C.png", 8, 8)
    argv = [a + ".png" if a == "C" else a for a in argv]
    rc = main(argv)
    cap = capsys.readouterr()
    lines = _json_lines(cap.out)
    assert rc == 2 and len(lines) == 1 and lines[0]["status"] == "error" and lines[0]["exit_code"] == 2
    assert needle in lines[0]["error"] and cap.err.count("\n") == 1


def test_export_onto_a_file_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "exists.onnx"
    f.write_bytes(b"keep me")
    rc = main(["export", "--weights", "random", "--out", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "is a file" in err and f.read_bytes() == b"keep me"
    rc = main(["bench", "--out", str(tmp_path), "--iters", "1"])
    assert rc == 2 and "is a folder" in capsys.readouterr().err
    # a refused export (weights missing) leaves no empty folder behind
    out = tmp_path / "new"
    assert main(["export", "--weights", str(tmp_path / "missing.pth"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err and not out.exists()


def test_user_slips_get_one_line_errors(tmp_path, capsys):
    """-o onto a folder, a .pth holding Python objects (torch's own advice to unpickle it is
    not passed on), a file that is no checkpoint, --iters 0, job status on a file or on a
    damaged manifest: one line each, exit 2."""
    c = tmp_path / "c.png"
    write_image(c, 12, 10, 1)
    base = ["stylize", str(c), "--style", str(c), "--size", "12", "--iters", "2"]
    cases = [(base + ["-o", str(tmp_path)] + REFERENCE_FAST, "output path is a folder"),
             (base + ["-o", str(tmp_path / "o.png"), "--iters", "0"] + REFERENCE_FAST, "--iters must be an integer >= 1")]
    torch.save({"layer": torch.nn.Linear(2, 2)}, tmp_path / "objects.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    for name, needle in (("objects.pth", "holds Python objects besides tensors"), ("junk.pth", "not a PyTorch")):
        cases.append((["stylize", str(c), "--style", str(c), "-o", str(tmp_path / "o.png"), "--size", "12",
                       "--weights", str(tmp_path / name)], needle))
    (tmp_path / "file").write_text("x")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "stylegrad-job.jsonl").write_text("garbage\n")
    cases += [(["job", "status", str(tmp_path / "file")], "is not a folder"),
              (["job", "status", str(tmp_path / "job")], "has no readable run record (1 unreadable line(s))")]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (argv, err)
        assert "weights_only" not in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o.png").exists()


def test_version_help_and_no_abbreviations(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith(f"stylegrad {stylegrad.__version__}")
    sub = build_parser()._subparsers._group_actions[0].choices
    for name in ("export", "bench", "stylize", "info"):
        for a in sub[name]._actions:
            assert a.help, (name, a.option_strings)
    assert main(["bench", "--iter", "2"]) == 2
    assert "unrecognized arguments: --iter" in capsys.readouterr().err
