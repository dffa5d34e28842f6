"""Coarse-to-fine (--min-size): the scales, their sizes in the JSON (the last is --size), targets
rebuilt per scale (cached per size), each scale started from the previous result, snapshots
named by scale."""
import json
import math

import pytest
import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.cli.main import main
from stylegrad.errors import ConfigError
from stylegrad.run import scales
from tests.helpers import write_image

SMALL = dict(weights="random", model="vgg16", backend="torch")


def test_sizes_grow_by_sqrt2_and_end_at_size():
    assert scales.scale_sizes(512, 128) == (128, 181, 256, 362, 512)
    assert scales.scale_sizes(512, None) == (512,) and scales.scale_sizes(512, 512) == (512,)
    assert scales.scale_sizes(512, 400) == (512,)             # 362 < 400: one scale
    for size, lo in [(1024, 100), (37, 5), (3, 1)]:
        s = scales.scale_sizes(size, lo)
        assert s[-1] == size and s[0] >= lo and list(s) == sorted(set(s))
        assert all(abs(b / a - math.sqrt(2)) < 0.1 for a, b in zip(s, s[1:]) if a >= 20)


def test_plan_iterations():
    p = scales.plan(StyleConfig(size=64, min_size=32, iters=7, iters_last=2))
    assert [(sc.index, sc.count, sc.size, sc.iters) for sc in p] == [(1, 3, 32, 7), (2, 3, 45, 7), (3, 3, 64, 2)]
    assert [sc.iters for sc in scales.plan(StyleConfig(size=64, iters=7, iters_last=2))] == [2]   # one scale: the last
    with pytest.raises(ConfigError, match="--min-size"):
        StyleConfig(size=64, min_size=65)
    with pytest.raises(ConfigError, match="--iters-last"):
        StyleConfig(iters_last=-1)


def test_each_scale_has_its_targets_and_starts_from_the_previous_result(monkeypatch):
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(3, 30, 40, generator=g), torch.rand(3, 26, 33, generator=g)
    st = Stylizer(StyleConfig(size=40, min_size=20, iters=3, iters_last=2, **SMALL))
    st.set_styles([style])
    starts, outs, style_sizes = [], [], []
    real_opt, real_targets = st.backend.optimize, st.targets.style_targets

    def optimize(x0, targets, report, keep, iters=None):
        starts.append((x0.clone(), iters))
        x = real_opt(x0, targets, report, keep, iters=iters)
        outs.append(x.clone())
        return x

    def style_targets(h, w, positions, styles=None):
        style_sizes.append((h, w, (h, w) in st.targets._style_cache))
        return real_targets(h, w, positions, styles)
    monkeypatch.setattr(st.backend, "optimize", optimize)
    monkeypatch.setattr(st.targets, "style_targets", style_targets)
    r = st.run(content)
    assert [(h, w) for h, w, _ in style_sizes] == [(15, 20), (21, 28), (30, 40)]
    assert not any(cached for _, _, cached in style_sizes)        # built once per size ...
    assert [it for _, it in starts] == [3, 3, 2]
    for k in (1, 2):      # scale k+1 starts from scale k's result, upsampled
        h, w = starts[k][0].shape[-2:]
        assert torch.allclose(starts[k][0], scales.upsample(outs[k - 1], h, w))
    assert [(p.scale, p.scales, p.width, p.height, p.iter) for p in r.history if p.iter == 0] == \
        [(1, 3, 20, 15, 0), (2, 3, 28, 21, 0), (3, 3, 40, 30, 0)]
    assert r.image.shape == (3, 30, 40)
    style_sizes.clear()
    st.run(content.flip(-1))
    assert all(cached for _, _, cached in style_sizes) and len(style_sizes) == 3   # ... and reused


def test_cli_json_rows_and_snapshots_name_the_scale(tmp_path, capsys):
    c = write_image(tmp_path / "c.png", 40, 30, seed=1)
    s = write_image(tmp_path / "s.png", 25, 33, seed=2)
    out = tmp_path / "o.png"
    rc = main(["stylize", str(c), "--style", str(s), "-o", str(out), "--size", "40", "--min-size", "20",
               "--iters", "4", "--iters-last", "2", "--save-every", "2", "--json", "--weights", "random",
               "--model", "vgg16", "--quiet"])
    assert rc == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
    rows = [l for l in lines if "iter" in l]
    seen = [(l["scale"], l["scales"], l["width"], l["height"], l["iter"]) for l in rows]
    want = [(1, 3, 20, 15, i) for i in range(5)] + [(2, 3, 28, 21, i) for i in range(5)] + \
        [(3, 3, 40, 30, i) for i in range(3)]
    assert seen == want
    summary = next(l for l in lines if l.get("status") == "ok" and "output" in l)   # the image's summary line
    assert lines[-1]["summary"] == "run" and lines[-1]["ok"] == 1
    assert summary["status"] == "ok" and (summary["width"], summary["height"], summary["scales"]) == (40, 30, 3)
    # snapshots of every scale, named by it; the last scale's last iteration is the output itself
    assert sorted(p.name for p in tmp_path.glob("o.*")) == [
        "o.png", "o.scale1.iter0002.png", "o.scale1.iter0004.png", "o.scale2.iter0002.png", "o.scale2.iter0004.png"]


def test_cuda_backend_loop_runs_a_scale_of_its_own_length():
    """Each scale passes its iteration count to the backend's loop; the cuda backend's own loop
    (eager on CPU tensors here) honours it. Not verified on a GPU."""
    from stylegrad.backends.cuda_backend import CudaBackend

    g = torch.Generator().manual_seed(1)
    cfg = StyleConfig(size=20, iters=9, **{**SMALL, "backend": "reference"})
    st = Stylizer(cfg)
    st.set_styles([torch.rand(3, 20, 17, generator=g)])
    x, targets = st.prepare(torch.rand(3, 15, 20, generator=g))
    cb = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    seen = []
    cb.optimize(x, targets, lambda k, ev, ms, xk: seen.append(k), iters=3)
    assert seen == [0, 1, 2, 3]


def test_job_folder_rows_and_snapshots_name_the_scale(tmp_path, capsys):
    """--out-dir runs go through the job machinery (stylegrad.jobs.work): same fields, same names."""
    d = tmp_path / "in"
    d.mkdir()
    write_image(d / "a.png", 40, 30, seed=1)
    s = write_image(tmp_path / "s.png", 25, 33, seed=2)
    out = tmp_path / "out"
    rc = main(["stylize", str(d), "--style", str(s), "--out-dir", str(out), "--size", "40", "--min-size", "28",
               "--iters", "2", "--iters-last", "2", "--save-every", "2", "--json", "--weights", "random",
               "--model", "vgg16", "--quiet"])
    assert rc == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.strip().splitlines()]
    rows = [l for l in lines if "iter" in l]
    assert [(l["scale"], l["scales"], l["width"], l["height"], l["iter"]) for l in rows] == \
        [(1, 2, 28, 21, i) for i in range(3)] + [(2, 2, 40, 30, i) for i in range(3)]
    done = [l for l in lines if l.get("status") == "ok"]
    assert len(done) == 1 and done[0]["scales"] == 2 and done[0]["width"] == 40
    assert sorted(p.name for p in out.glob("a.*")) == ["a.png", "a.scale1.iter0002.png"]


def test_plain_progress_lines_count_over_all_scales(tmp_path, capsys):
    """Without a terminal, plain lines say which scale and count iterations over the whole run
    (so the ETA covers every scale, and --iters-last above --iters still has its lines)."""
    from stylegrad.cli.main import main

    c = tmp_path / "c.png"
    write_image(c, 40, 30, 1)
    s = write_image(tmp_path / "s.png", 36, 28, 2)    # not the photo: its own painting has nothing to optimise
    argv = ["stylize", str(c), "--style", str(s), "--weights", "random", "--backend", "reference", "--size", "40",
            "--min-size", "20", "--iters", "2", "--iters-last", "4", "--print-every", "1", "--lbfgs-history", "5"]
    assert main(argv + ["-o", str(tmp_path / "o.png")]) == 0
    lines = [l for l in capsys.readouterr().err.splitlines() if ": iter " in l]
    got = [(l.split(": iter ")[0].split()[-2:], l.split(": iter ")[1].split()[0]) for l in lines]
    # each scale's iteration 0 (the upsampled image at its new size) starts where the last one ended
    want = [(["scale", "1/3"], f"{i}/8") for i in (0, 1, 2)] + [(["scale", "2/3"], f"{i}/8") for i in (2, 3, 4)] + \
        [(["scale", "3/3"], f"{i}/8") for i in (4, 5, 6, 7)]
    assert got == want
    # a job folder (--out-dir) counts the same way
    assert main(argv + ["--out-dir", str(tmp_path / "job")]) == 0
    lines = [l for l in capsys.readouterr().err.splitlines() if ": iter " in l]
    assert [l.split(": iter ")[1].split()[0] for l in lines] == [f"{i}/8" for i in (0, 1, 2, 2, 3, 4, 4, 5, 6, 7)]


def test_result_line_compares_losses_of_the_full_size_scale(tmp_path, capsys):
    """With several scales the finished image's line starts from the full-size scale's
    iteration 0 (a loss at another size does not compare), -o and --out-dir alike."""
    c = tmp_path / "c.png"
    write_image(c, 40, 30, 1)
    s = write_image(tmp_path / "s.png", 36, 28, 2)    # not the photo: its own painting has nothing to optimise
    argv = ["stylize", str(c), "--style", str(s), "--weights", "random", "--backend", "reference", "--size", "40",
            "--min-size", "20", "--iters", "3", "--lbfgs-history", "5"]
    st = Stylizer(StyleConfig(weights="random", backend="reference", size=40, min_size=20, iters=3, lbfgs_history=5))
    r = st.run(str(c), [str(s)])
    full = [p for p in r.history if p.scale == 3]
    assert r.last_scale_initial_loss == full[0].loss != r.initial_loss == r.history[0].loss
    for where in (["-o", str(tmp_path / "o.png")], ["--out-dir", str(tmp_path / "job")]):
        assert main(argv + where) == 0
        line = [l for l in capsys.readouterr().err.splitlines() if "at full size" in l]
        assert len(line) == 1 and "(3 scales; the first started at " in line[0]
