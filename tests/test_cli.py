"""The CLI end to end on tiny images with random weights, and every bad input."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from stylegrad.cli.main import main
from tests.helpers import EXAMPLES, write_image

FAST = ["--weights", "random", "--backend", "reference", "--quiet"]


def _json_lines(out):
    return [json.loads(l) for l in out.strip().splitlines()]


def test_stylize_json_end_to_end(tmp_path, capsys):
    c = write_image(tmp_path / "c.png", 40, 30, seed=1)
    s = write_image(tmp_path / "s.jpg", 25, 33, seed=2)
    out = tmp_path / "out.png"
    rc = main(["stylize", str(c), "--style", str(s), "-o", str(out), "--size", "37", "--iters", "15", "--json"] + FAST)
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (37, 28)                   # longest side 37, aspect kept (30*37/40 = 27.75)
    lines = _json_lines(capsys.readouterr().out)
    iters = [l for l in lines if "iter" in l]
    assert [l["iter"] for l in iters] == list(range(16))
    for l in iters:
        assert set(l) == {"image", "scale", "scales", "width", "height", "iter", "loss", "content", "style", "tv", "ms"}
        assert (l["scale"], l["scales"], l["width"], l["height"]) == (1, 1, 37, 28)
        assert l["loss"] == pytest.approx(l["content"] + l["style"] + l["tv"], rel=1e-6)
    assert iters[-1]["loss"] < 0.5 * iters[0]["loss"]   # losses decrease
    summary, closing = lines[-2:]
    assert summary["status"] == "ok" and summary["output"] == str(out) and summary["width"] == 37
    assert closing["summary"] == "run" and closing["ok"] == 1 and closing["exit_code"] == 0


def test_console_script_example_and_no_traceback(tmp_path):
    """The README quickstart, through the installed console script."""
    out = tmp_path / "stylised.png"
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "stylegrad.cli.main", "stylize", str(EXAMPLES / "content.png"), "--style",
           str(EXAMPLES / "style.png"), "-o", str(out), "--weights", "random", "--size", "48", "--iters", "5", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = _json_lines(r.stdout)
    assert lines[-2]["status"] == "ok" and lines[-1]["ok"] == 1 and out.exists()
    assert "random VGG weights" in r.stderr          # said once
    assert r.stderr.count("random VGG weights") == 1
    bad = subprocess.run([sys.executable, "-m", "stylegrad.cli.main", "stylize", str(out), "--style", "nope.png",
                          "-o", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "nope.png" in bad.stderr


@pytest.mark.parametrize("argv,needle", [
    (["stylize", "C", "--style", "S"], "required"),                                   # no -o / --out-dir
    (["stylize", "C", "--style", "S", "-o", "a.png", "--size", "0"], "--size"),
    (["stylize", "C", "--style", "S", "-o", "a.png", "--size", "abc"], "invalid int"),
    (["stylize", "C", "--style", "S", "-o", "a.png", "--style-layers", "relu9_9"], "unknown style layer"),
    (["stylize", "C", "--style", "S", "-o", "a.png", "--content-weight", "-1"], "--content-weight"),
    (["stylize", "C", "--style", "S", "-o", "a.bmpx"], "unknown extension"),
    (["stylize", "C", "--style", "S", "-o", "a.png", "--device", "tpu"], "--device"),
    (["stylize", "C", "--style", "S", "-o", "a.png", "--weights", "random:x"], "integer seed"),
    (["stylize", "C", "--style", "S", "-o", "a.png", "--style-blend-weights", "1,2"], "blend"),
    (["stylize", "C", "D", "--style", "S", "-o", "a.png"], "--out-dir"),
    (["frobnicate"], "invalid choice"),
    ([], "a command is needed"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    for name in ("C", "D", "S"):
        write_image(tmp_path / f"{name}.png", 8, 8)
    argv = [a + ".png" if a in ("C", "D", "S") else a for a in argv]
    if "--weights" not in argv and argv[:1] == ["stylize"]:
        argv += ["--weights", "random"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("stylegrad: error:"), err
    assert needle in err


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    c = write_image(tmp_path / "c.png", 8, 8)
    before = c.read_bytes()
    rc = main(["stylize", str(c), "--style", str(c), "-o", str(c), "--iters", "1"] + FAST)
    assert rc == 2 and "refusing to overwrite" in capsys.readouterr().err
    assert c.read_bytes() == before
    rc = main(["stylize", str(c), "--style", str(c), "--out-dir", str(tmp_path), "--iters", "1"] + FAST)
    assert rc == 2 and c.read_bytes() == before       # tmp/c.png would be the output


def test_batch_continues_past_a_bad_file(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    write_image(d / "a.png", 20, 12, seed=1)
    (d / "b.png").write_bytes(b"corrupt")
    write_image(d / "c.jpg", 12, 20, seed=3)
    s = write_image(tmp_path / "s.png", 16, 16, seed=4)
    out = tmp_path / "out"
    rc = main(["stylize", str(d), "--style", str(s), "--out-dir", str(out), "--size", "16", "--iters", "3",
               "--json", "--weights", "random", "--backend", "reference"])
    cap = capsys.readouterr()
    assert rc == 1
    assert sorted(os.listdir(out)) == ["a.png", "c.png", "stylegrad-job.jsonl"]   # outputs + the job manifest
    assert "b.png" in cap.err and "Traceback" not in cap.err
    statuses = {l["image"].rsplit("/", 1)[1]: l["status"] for l in _json_lines(cap.out) if "image" in l and "status" in l}
    assert statuses == {"a.png": "ok", "b.png": "error", "c.jpg": "ok"}


def test_write_failure_is_per_image_and_leaves_no_partial(tmp_path, capsys, monkeypatch):
    c1, c2 = write_image(tmp_path / "one.png", 10, 10, 1), write_image(tmp_path / "two.png", 10, 10, 2)
    s = write_image(tmp_path / "s.png", 10, 10, 3)
    out = tmp_path / "out"
    real_save = Image.Image.save

    calls = []

    def flaky(self, fp, format=None, **kw):
        calls.append(1)
        if len(calls) == 1:                            # the first image's write fails midway
            fp.write(b"partial")
            raise OSError(5, "Input/output error")
        return real_save(self, fp, format=format, **kw)

    monkeypatch.setattr(Image.Image, "save", flaky)
    rc = main(["stylize", str(c1), str(c2), "--style", str(s), "--out-dir", str(out), "--size", "10", "--iters", "2"] + FAST)
    assert rc == 1
    assert sorted(os.listdir(out)) == ["stylegrad-job.jsonl", "two.png"]   # no partial one.png, no temporaries
    assert "Input/output error" in capsys.readouterr().err


def test_save_every_writes_snapshots(tmp_path):
    c, s = write_image(tmp_path / "c.png", 12, 12, 1), write_image(tmp_path / "s.png", 12, 12, 2)
    out = tmp_path / "o.jpg"
    assert main(["stylize", str(c), "--style", str(s), "-o", str(out), "--size", "12", "--iters", "6",
                 "--save-every", "2"] + FAST) == 0
    assert sorted(p.name for p in tmp_path.glob("o*")) == ["o.iter0002.jpg", "o.iter0004.jpg", "o.jpg"]


def test_info_runs(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "onnxruntime_providers" in info and "weights_cache" in info and info["backends"]["reference@cpu"] == "yes"


def test_batch_size_groups_by_size_and_print_every(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i, (w, h) in enumerate([(16, 12), (12, 16), (16, 12), (16, 12)]):
        write_image(d / f"{i}.png", w, h, seed=i)
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    out = tmp_path / "out"
    rc = main(["stylize", str(d), "--style", str(s), "--out-dir", str(out), "--size", "16", "--iters", "4",
               "--batch-size", "2", "--print-every", "2", "--json"] + FAST)
    assert rc == 0
    lines = _json_lines(capsys.readouterr().out)
    assert sorted(os.listdir(out)) == ["0.png", "1.png", "2.png", "3.png", "stylegrad-job.jsonl"]
    per_image = {}
    for l in lines:
        if "iter" in l:
            per_image.setdefault(l["image"].rsplit("/", 1)[1], []).append(l["iter"])
    assert all(v == [0, 2, 4] for v in per_image.values()) and len(per_image) == 4
    with Image.open(out / "1.png") as im:
        assert im.size == (12, 16)


def test_export_bench_and_kernels_check_commands(tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", "--weights", "random", "--out", str(out), "--style-layers", "relu1_1,relu2_1",
                 "--content-layers", "relu2_2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["opset"] == 17 and (out / "forward.onnx").exists() and (out / "backward.onnx").exists()
    capsys.readouterr()
    rd = tmp_path / "results"
    assert main(["bench", "--backends", "reference,torch", "--size", "24,20", "--iters", "2", "--repeat", "2",
                 "--warmup", "1", "--json", "--out-dir", str(rd)]) == 0
    reports = _json_lines(capsys.readouterr().out)
    assert [r["size"] for r in reports] == [24, 20]
    for r in reports:
        assert {"device", "size", "batch", "iters", "commit", "date", "results"} <= set(r)
        names = [x["backend"] for x in r["results"]]
        assert names == ["reference", "torch"]
        for x in r["results"]:
            assert x["ms_per_iter"] > 0 and x["ms_min"] <= x["ms_per_iter"]
            assert {"precision", "final_loss", "loss_rel_diff_vs_reference", "speedup_vs_reference", "peak_mem_mb",
                    "phases_ms"} <= set(x)
            assert {"forward", "losses", "backward"} <= set(x["phases_ms"]) or x["backend"] == "reference"
    assert sorted(p.name for p in rd.iterdir()) == ["cpu-20-b1.json", "cpu-24-b1.json"]
    rc = main(["kernels", "check", "--arch", "sm_80"])
    table = capsys.readouterr().out
    assert rc == 0 and "gram" in table and "sm_80" in table
    assert main(["bench", "--iters", "0"]) == 2


def test_diverged_run_is_an_error_and_json_stays_valid(tmp_path, capsys):
    c, s = write_image(tmp_path / "c.png", 16, 16, 1), write_image(tmp_path / "s.png", 16, 16, 2)
    out = tmp_path / "o.png"
    rc = main(["stylize", str(c), "--style", str(s), "-o", str(out), "--size", "16", "--iters", "30",
               "--lr", "1e9", "--json"] + FAST)
    cap = capsys.readouterr()
    assert rc == 1 and not out.exists()
    assert "NaN" not in cap.out and "Infinity" not in cap.out
    lines = _json_lines(cap.out)                     # strict JSON throughout
    assert lines[-2]["status"] == "error" and "diverged" in lines[-2]["error"]
    assert lines[-1]["failed"] == 1 and lines[-1]["exit_code"] == 1


def test_pair_styles(tmp_path, capsys):
    c1, c2 = write_image(tmp_path / "a.png", 12, 12, 1), write_image(tmp_path / "b.png", 12, 12, 2)
    s1, s2 = write_image(tmp_path / "s1.png", 12, 12, 3), write_image(tmp_path / "s2.png", 12, 12, 4)
    out = tmp_path / "out"
    assert main(["stylize", str(c1), str(c2), "--style", str(s1), "--style", str(s2), "--pair-styles",
                 "--out-dir", str(out), "--size", "12", "--iters", "3", "--batch-size", "2"] + FAST) == 0
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "stylegrad-job.jsonl"]
    assert main(["stylize", str(c1), str(c2), "--style", str(s1), "--pair-styles", "--out-dir", str(out),
                 "--iters", "1"] + FAST) == 2
    assert "one --style per content image" in capsys.readouterr().err
