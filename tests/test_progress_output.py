"""Progress reporting: plain progress lines in logs, the tally line and the --json summary, the
terminal bar's image number, and the progress helpers."""
import json
import math
import sys
import time

import pytest

from stylegrad.cli.main import main
from stylegrad.run import progress as prog
from tests.helpers import write_image


FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5"]


def _json_lines(out):
    return [json.loads(l) for l in out.strip().splitlines()]


def test_plain_progress_lines_tally_and_summary(tmp_path, capsys, monkeypatch):
    """stderr is not a terminal here (capsys): plain progress lines every --print-every, a
    tally line; with --json a closing summary object. (--out-dir: through the job machinery.)"""
    d = tmp_path / "in"
    d.mkdir()
    write_image(d / "a.png", 10, 10, 1)
    write_image(d / "b.png", 10, 10, 2)
    (d / "c.png").write_bytes(b"broken")
    out = tmp_path / "out"
    s = write_image(tmp_path / "s.png", 10, 10, 3)     # a photo as its own painting has nothing to optimise
    argv = ["stylize", str(d), "--style", str(s), "--out-dir", str(out), "--size", "10", "--iters", "4"] + FAST
    assert main(argv + ["--print-every", "2"]) == 1
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if " iter " in l]
    assert [l.split(":")[1].strip() for l in lines] == ["image 1/3 a.png"] * 2 + ["image 2/3 b.png"] * 2
    assert "iter 0/4" in lines[0] and "iter 2/4" in lines[1] and "ms/iter" in lines[1] and "ETA" in lines[1]
    assert err.strip().splitlines()[-1].startswith(f"stylegrad: job {out}: ok 2, failed 1, skipped 0")
    # without --print-every: time-throttled (here: only each image's first line)
    monkeypatch.setattr(prog, "LOG_INTERVAL_S", 1e9)
    assert main(argv + ["--fresh"]) == 1
    assert [l for l in capsys.readouterr().err.splitlines() if " iter " in l and "iter 0/" not in l] == []
    assert main(argv + ["--json", "--fresh"]) == 1
    summary = _json_lines(capsys.readouterr().out)[-1]
    assert {k: summary[k] for k in ("summary", "ok", "failed", "failed_images", "written_to", "exit_code")} == {
        "summary": "job", "ok": 2, "failed": 1, "failed_images": [str(d / "c.png")], "written_to": str(out),
        "exit_code": 1}
    assert summary["seconds"] == summary["wall_seconds"] > 0 and summary["skipped"] == 0
    # -o: the same lines and a "run" summary
    c = d / "a.png"
    assert main(["stylize", str(c), "--style", str(s), "-o", str(tmp_path / "o.png"), "--size", "10", "--iters",
                 "2", "--print-every", "1", "--json"] + FAST) == 0
    assert _json_lines(capsys.readouterr().out)[-1]["summary"] == "run"
    assert main(["stylize", str(c), "--style", str(s), "-o", str(tmp_path / "o.png"), "--size", "10", "--iters",
                 "2", "--print-every", "1"] + FAST) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert [l for l in err if " iter " in l][-1].startswith("stylegrad: image 1/1 a.png: iter 1/2 loss ")
    assert err[-1] == f"stylegrad: ok 1, failed 0, written to {tmp_path / 'o.png'}"


def test_terminal_bar_names_the_image_number(tmp_path, capsys, monkeypatch):
    c = write_image(tmp_path / "c.png", 8, 8)
    s = write_image(tmp_path / "s.png", 8, 8, 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["stylize", str(c), "--style", str(s), "-o", str(tmp_path / "o.png"), "--iters", "2", "--size", "8"] + FAST) == 0
    assert "image 1/1 c.png" in capsys.readouterr().err


def test_progress_helpers():
    assert [prog.format_duration(s) for s in (9.4, 144, 3725, None, math.inf)] == ["9s", "2m24s", "1h02m", "?", "?"]
    assert prog.image_label(3, 2, 10) == "images 3-4/10" and prog.image_label(3, 1, 10) == "image 3/10"
    assert prog.tally_line(0, 2, "x") == "ok 0, failed 2, nothing written"
    clock = prog.JobClock(images=4, iters=10, started=time.perf_counter() - 4.0)
    clock.progress("a", 0)
    clock.progress("a", 10)
    clock.finished("a")
    clock.progress("b", 0)
    clock.progress("b", 10)
    assert clock.ms_per_iter("b") is not None and clock.ms_per_iter("c") is None
    # 20 image-iterations took ~4 s; 20 are left: ~4 s
    assert clock.eta_s() == pytest.approx(4.0, rel=0.05)
    t = prog.LineThrottle(every=None, interval_s=1e9)
    assert [t.due(i) for i in range(4)] == [True, False, False, False]
    assert [prog.LineThrottle(every=2).due(i) for i in range(5)] == [True, False, True, False, True]
