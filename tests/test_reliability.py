"""Reliability guarantees (README "Reliability"): wrong results are never returned silently, bad
work is refused before any compute, memory is bounded, files are written safely, progress is
reported everywhere, the API's errors are typed. Tiny images and random weights throughout."""
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import stylegrad
from stylegrad import StyleConfig, Stylizer, fileio, memory
from stylegrad import images as imgs
from stylegrad import progress as prog
from stylegrad.backends.base import Evaluation
from stylegrad.cli import build_parser, main
from stylegrad.errors import ConfigError, DivergedError, ImageError, MemoryLimitError, OutputLockedError, WeightsError
from tests.helpers import write_image

SMALL = dict(weights="random", backend="reference", size=16, iters=10, lbfgs_history=5)
FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5"]


def _json_lines(out):
    return [json.loads(l) for l in out.strip().splitlines()]


def _nan_after(backend, calls_ok, per_image=None):
    """Make ``backend.evaluate`` return a NaN loss from call ``calls_ok`` on (for image b from
    call ``per_image[b]`` when given); returns the list of calls made."""
    real = backend.evaluate
    calls = []

    def evaluate(img, targets):
        ev = real(img, targets)
        n = len(calls)
        calls.append(n)
        starts = per_image or [calls_ok] * img.shape[0]
        bad = torch.tensor([n >= s for s in starts])
        nan = torch.full_like(ev.content, float("nan"))
        return Evaluation(torch.where(bad, nan, ev.content), ev.style, ev.tv, ev.grad)

    backend.evaluate = evaluate
    return calls


# -- 1, 5: diverged runs ---------------------------------------------------------------------

def test_diverged_run_raises_stops_at_once_or_returns_the_last_finite_iterate():
    g = torch.Generator().manual_seed(0)
    c, s = torch.rand(3, 16, 12, generator=g), torch.rand(3, 14, 14, generator=g)
    st = Stylizer(StyleConfig(**SMALL, save_every=1))
    st.set_styles([s])
    calls = _nan_after(st.backend, 4)
    with pytest.raises(DivergedError) as e:
        st.run(c)
    err = e.value
    assert err.iteration == 4 and err.last_finite_iteration == 3 and math.isfinite(err.last_finite_loss)
    assert "iteration 4" in str(err) and err.result.image is None
    assert len(calls) == 5                     # stopped at the first non-finite loss, not 11 evaluations

    calls.clear()
    snaps = {}
    r = st.run(c, callback=lambda p: snaps.setdefault(p.iter, p.snapshot) if p.snapshot is not None else None,
               last_finite=True)
    assert r.status == "diverged" and "iteration 3" in r.message
    assert torch.isfinite(r.image).all() and torch.equal(r.image, snaps[3])

    # the one-call API raises the same typed error (never a NaN or black image)
    st2 = Stylizer(StyleConfig(**SMALL))
    _nan_after(st2.backend, 0)
    with pytest.raises(DivergedError) as e2:
        st2.stylize(c, [s])
    assert e2.value.iteration == 0 and e2.value.last_finite_iteration is None
    with pytest.raises(DivergedError):              # no finite iterate at all: still an error
        st2.run(c, last_finite=True)


def test_cuda_backend_loop_stops_at_the_first_non_finite_loss_and_reports_it():
    """The cuda backend's loop (on CPU tensors): losses are checked on the host at reports and
    every DIVERGENCE_CHECK_EVERY iterations; the first non-finite iteration of each image is
    reported exactly, and the loop stops when every image has one, as the eager loop does."""
    from stylegrad.backends.cuda_backend import DIVERGENCE_CHECK_EVERY, CudaBackend
    from stylegrad.optimize import optimize

    cfg = StyleConfig(weights="random", size=14, iters=40, print_every=100, lbfgs_history=5)
    st = Stylizer(cfg.replace(backend="reference"))
    g = torch.Generator().manual_seed(1)
    st.set_styles([torch.rand(3, 14, 14, generator=g)])
    x, t = st.prepare(torch.rand(2, 3, 14, 14, generator=g))
    cb = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    calls = _nan_after(cb, None, per_image=[2, 6])
    got = []
    cb.optimize(x, t, lambda k, ev, ms, xk: got.append((k, ev.total.tolist())))
    assert [k for k, _ in got] == [0, 2, 6]                  # iteration 0, then each image's first NaN
    assert math.isnan(got[1][1][0]) and math.isfinite(got[1][1][1]) and math.isnan(got[2][1][1])
    assert DIVERGENCE_CHECK_EVERY == 10
    assert len(calls) == 10 < cfg.iters                      # stopped at the next check (iteration 9)
    # the eager loop over the same evaluations reports the same iteration and stops there
    cb2 = CudaBackend(st.vgg, cfg.replace(backend="cuda"), torch.device("cpu"), use_cuda_kernels=False)
    calls2 = _nan_after(cb2, None, per_image=[2, 6])
    eager = []
    optimize(x, lambda img: cb2.evaluate(img, t), cb2.config, lambda k, ev, ms, xk: eager.append(k))
    assert eager[-1] == 6 and len(calls2) == 7


# -- 2, 17: configuration values and types ---------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--style-weight", "inf"), ("--content-weight", "inf"), ("--tv-weight", "nan"),
                                        ("--lr", "inf"), ("--style-layers", "relu1_1:inf"),
                                        ("--content-layers", "relu4_2:nan"), ("--style-blend-weights", "1,inf"),
                                        ("--style-scale", "inf"), ("--max-memory", "0")])
def test_non_finite_option_values_are_refused_up_front(tmp_path, capsys, flag, value):
    c = write_image(tmp_path / "c.png", 8, 8)
    rc = main(["stylize", str(c), "--style", str(c), "-o", str(tmp_path / "o.png"), flag, value] + FAST)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()


def test_config_types_are_checked_at_construction():
    for kw, needle in [(dict(style_weight="1e7"), "style_weight must be a number"),
                       (dict(content_weight=None), "content_weight must be a number"),
                       (dict(size=True), "size must be an integer"), (dict(iters=2.5), "iters must be an integer"),
                       (dict(optimizer=1), "optimizer must be a string"),
                       (dict(style_blend_weights="1,2"), "tuple of numbers"),
                       (dict(lr=float("inf")), "--lr must be a finite"),
                       (dict(style_scale=float("inf")), "--style-scale must be a finite")]:
        with pytest.raises(ConfigError, match=needle):
            StyleConfig(**kw)
    c = StyleConfig(style_layers="relu1_1", content_layers=["relu3_1"], size=np.int64(64), style_weight=3)
    assert c.style_layers == ("relu1_1",) and c.content_layers == ("relu3_1",)   # not split into letters
    assert type(c.size) is int and type(c.style_weight) is float
    assert StyleConfig(style_layers="relu1_1, relu2_1").style_layers == ("relu1_1", "relu2_1")


def test_api_errors_are_typed():
    st = Stylizer(StyleConfig(**SMALL))
    st.set_styles([torch.rand(3, 8, 8)])
    with pytest.raises(ImageError, match="no pixels"):
        st.run(Image.new("RGB", (0, 0)))
    with pytest.raises(ConfigError, match="at least one"):
        st.run_batch([])
    with pytest.raises(ConfigError, match="1 name.* for 2"):
        st.run_batch([torch.rand(3, 8, 8), torch.rand(3, 8, 8)], names=["a"])
    with pytest.raises(ImageError, match="same size"):
        st.run_batch([torch.rand(3, 8, 8), torch.rand(3, 8, 6)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # numpy cast warnings must not leak
        with pytest.raises(ImageError, match="expected"):
            imgs.to_tensor(np.full((5, 6, 3), 1e300))
        with pytest.raises(ImageError, match="NaN"):
            imgs.to_tensor(np.full((5, 6, 3), np.nan, np.float16))


# -- 3: pixel ranges and layouts --------------------------------------------------------------

def test_float_tiffs_are_read_by_their_range(tmp_path):
    a = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(a, "F").save(tmp_path / "unit.tif")
    Image.fromarray(a * 255, "F").save(tmp_path / "byte.tif")
    Image.fromarray(a * 300, "F").save(tmp_path / "over.tif")
    Image.fromarray(a - 0.5, "F").save(tmp_path / "neg.tif")
    unit, byte = imgs.load_image(tmp_path / "unit.tif"), imgs.load_image(tmp_path / "byte.tif")
    assert torch.allclose(unit[0], torch.from_numpy(a)) and torch.allclose(byte, unit, atol=1e-6)
    for bad in ("over.tif", "neg.tif"):
        with pytest.raises(ImageError, match=r"expected \[0, 1\] or \[0, 255\]"):
            imgs.load_image(tmp_path / bad)


def test_arrays_outside_their_range_or_ambiguous_layouts_are_refused():
    u8 = (np.arange(60) % 256).astype(np.uint8).reshape(5, 4, 3)
    ref = imgs.to_tensor(u8)
    assert torch.equal(imgs.to_tensor(u8.astype(np.int64)), ref)            # int64 0..255 = 8-bit
    assert torch.equal(imgs.to_tensor(torch.from_numpy(u8).permute(2, 0, 1).contiguous()), ref)   # uint8 tensor
    with pytest.raises(ImageError, match=r"expected \[0, 1\]"):
        imgs.to_tensor(u8.astype(np.float32))                               # floats in 0..255
    with pytest.raises(ImageError, match="expected 0..255"):
        imgs.to_tensor(u8.astype(np.int64) * 10)
    with pytest.raises(ImageError, match=r"expected \[0, 1\]"):
        imgs.to_tensor(torch.rand(3, 4, 5) * 255)
    with pytest.raises(ImageError, match=r"could be \(H, W, C\) or \(C, H, W\)"):
        imgs.to_tensor(np.zeros((3, 7, 4), np.float32))                      # CHW of width 4
    with pytest.raises(ImageError, match=r"looks like \(C, H, W\)"):
        imgs.to_tensor(np.zeros((3, 7, 9), np.float32))
    assert imgs.to_tensor(torch.rand(3, 7, 3)).shape == (3, 7, 3)           # tensors are always CHW
    slack = imgs.to_tensor(np.full((2, 2), 1 + 1e-4, np.float32))           # rounding slack is clipped
    assert float(slack.max()) == 1.0


# -- 6, 7, 8: late checks ----------------------------------------------------------------------

def test_output_folders_are_checked_before_any_compute(tmp_path, capsys, monkeypatch):
    c = write_image(tmp_path / "c.png", 8, 8)
    built = []
    monkeypatch.setattr(Stylizer, "__init__", lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    rc = main(["stylize", str(c), "--style", str(c), "-o", str(tmp_path / "typo_dir" / "x.png")] + FAST)
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
    rc = main(["stylize", str(c), "--style", str(c), "--out-dir", str(ro), "--json"] + FAST)
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


# -- 9, 10: memory and non-regular files -------------------------------------------------------

def test_memory_estimate_parts_follow_the_documented_figures():
    cfg = StyleConfig(size=256)
    a = memory.estimate_run(cfg, (256, 256), backend="torch")
    b = memory.estimate_run(cfg.replace(lbfgs_history=10), (256, 256), backend="torch")
    P = 256 * 256
    assert a.parts["optimiser"] - b.parts["optimiser"] == 90 * 2 * 3 * 4 * P     # 24 B/px per history pair
    assert memory.estimate_run(cfg, (256, 256), batch=2, backend="torch").parts["evaluation"] == 2 * a.parts["evaluation"]
    # the saved tensors of stylegrad.backward's doc: 160 B/px masks + 520 B/px features (avg)
    plain = memory.evaluation_bytes_per_pixel(cfg, "torch") - memory.TRANSIENT["torch"] * 256
    assert plain == pytest.approx(160 + 520)
    assert memory.autograd_bytes_per_pixel("vgg19", "avg", cfg.loss_layers()) == pytest.approx(1292)
    assert memory.autograd_bytes_per_pixel("vgg19", "max", cfg.loss_layers()) == pytest.approx(1532)
    # a style scaled 1000 times: the target forward dominates and is refused
    big = memory.estimate_run(cfg.replace(style_scale=1000.0), (256, 256), style_source_hw=[(300, 300)])
    assert "style targets" in big.parts and big.total > 2**40
    with pytest.raises(MemoryLimitError, match="style-scale"):
        memory.check_fits(big, cfg)


def test_runs_over_the_memory_limit_are_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    c = write_image(tmp_path / "c.png", 12, 12)
    built = []
    monkeypatch.setattr(Stylizer, "__init__", lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    for extra in (["--max-memory", "1M"], ["--style-scale", "1000"], ["--size", "100000"]):
        rc = main(["stylize", str(c), "--style", str(c), "-o", str(tmp_path / "o.png")] + FAST + extra)
        err = capsys.readouterr().err
        assert rc == 2 and "would need about" in err and err.count("\n") == 1, (extra, err)
    assert not built
    # the API: Stylizer.run_batch checks before optimising
    monkeypatch.undo()
    st = Stylizer(StyleConfig(**SMALL, max_memory=2**19))
    st.set_styles([torch.rand(3, 8, 8)])
    with pytest.raises(MemoryLimitError, match="--max-memory"):
        st.run(torch.rand(3, 16, 16))


def test_decompression_bomb_limit_follows_the_memory_and_is_one_line(tmp_path):
    p = tmp_path / "big.png"
    Image.new("L", (1000, 1000)).save(p)                    # 1 Mpx, a few KB on disk
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=r"more pixels than --max-memory 1 MiB can decode \(0.04[0-9] Mpx at most;.* or raise --max-memory$") as e:
            imgs.load_image(p, max_bytes=1_000_000)          # ~50 kpx at the decode cost per pixel
        assert "\n" not in str(e.value)
        with pytest.raises(ImageError, match="more pixels"):
            imgs.image_size(p, max_bytes=1_000_000)
        assert imgs.load_image(p, max_bytes=100_000_000).shape == (3, 1000, 1000)
    assert Image.MAX_IMAGE_PIXELS == saved                  # Pillow's global is left as it was
    assert imgs.decode_pixel_limit(2**30) == 2**30 // (memory.DECODE_BYTES + memory.DECODE_EXTRA)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_non_regular_inputs_are_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("blocked on a FIFO")))
    signal.alarm(60)
    try:
        with pytest.raises(ImageError, match="FIFO"):
            imgs.load_image(fifo)
        c = write_image(tmp_path / "c.png", 8, 8)
        assert main(["stylize", str(c), "--style", str(fifo), "-o", str(tmp_path / "o.png")] + FAST) == 2
        assert "FIFO" in capsys.readouterr().err
        with pytest.raises(WeightsError, match="not a regular file"):
            stylegrad.weights.load_vgg(str(fifo))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- 11, 12, 13: files -------------------------------------------------------------------------

# the sweep's rule (only our regular files, of a dead process): tests/reliability/test_files.py


def test_an_interrupted_write_leaves_no_temporary(tmp_path):
    from stylegrad.errors import Terminated

    with pytest.raises(Terminated):
        with fileio.atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"partial")
            raise Terminated()
    assert os.listdir(tmp_path) == []


def test_sigterm_exits_143_and_leaves_nothing_partial(tmp_path):
    """-o (job folders: tests/test_jobs.py): SIGTERM mid-run, exit 143, nothing left behind."""
    c = write_image(tmp_path / "c.png", 24, 24)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "stylegrad.cli", "stylize", str(c), "--style", str(c), "-o", str(out / "o.png"),
           "--size", "24", "--iters", "100000", "--print-every", "1"] + FAST
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:                      # wait until it optimises
            if "iter 1/" in line:
                break
        p.send_signal(signal.SIGTERM)
        rest = p.stderr.read()
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 143 and "terminated (SIGTERM)" in rest and "Traceback" not in rest
    assert os.listdir(out) == []                   # no output, no temporary, no lock file


def test_output_lock_is_exclusive_and_named(tmp_path, capsys):
    out = tmp_path / "o.png"
    with fileio.output_lock(out):
        assert fileio.lock_path(out).exists()
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            with fileio.output_lock(out):
                pass
        c = write_image(tmp_path / "c.png", 8, 8)
        rc = main(["stylize", str(c), "--style", str(c), "-o", str(out), "--iters", "1", "--quiet"] + FAST)
        assert rc == 1 and "being written by another process" in capsys.readouterr().err and not out.exists()
    assert not fileio.lock_path(out).exists()          # released and removed
    with fileio.output_lock(out):                      # and free again
        pass


# permissions of written files: tests/reliability/test_files.py


# -- 14, 15, 16: feedback ----------------------------------------------------------------------

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


def test_version_help_and_no_abbreviations(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith(f"stylegrad {stylegrad.__version__}")
    sub = build_parser()._subparsers._group_actions[0].choices
    for name in ("export", "bench", "stylize", "info"):
        for a in sub[name]._actions:
            assert a.help, (name, a.option_strings)
    assert main(["bench", "--iter", "2"]) == 2
    assert "unrecognized arguments: --iter" in capsys.readouterr().err


def test_last_finite_with_coarse_to_fine_returns_a_full_size_image():
    """last_finite across scales (min_size): an image that diverges in the first scale comes back
    with that scale's last finite iterate upsampled to the output size (with the content's
    chroma under original_colors), and the message names the scale."""
    g = torch.Generator().manual_seed(3)
    c, s = torch.rand(3, 32, 24, generator=g), torch.rand(3, 14, 14, generator=g)
    cfg = StyleConfig(**{**SMALL, "size": 32, "iters": 6}, min_size=16, original_colors="postprocess")
    st = Stylizer(cfg)
    st.set_styles([s])
    _nan_after(st.backend, 3)                      # calls 0..2 finite: scale 1 diverges at iteration 3
    with pytest.raises(DivergedError):
        st.run(c)
    st2 = Stylizer(cfg)
    st2.set_styles([s])
    _nan_after(st2.backend, 3)
    r = st2.run(c, last_finite=True)
    assert r.status == "diverged" and r.message.startswith("scale 1 of 3 (12x16)") and "(iteration 2 of scale 1)" in r.message
    assert tuple(r.image.shape) == (3, 32, 24) and torch.isfinite(r.image).all()
    assert r.image.min() >= 0 and r.image.max() <= 1


def test_user_slips_get_one_line_errors(tmp_path, capsys):
    """-o onto a folder, a .pth holding Python objects (torch's own advice to unpickle it is
    not passed on), a file that is no checkpoint, --iters 0, job status on a file or on a
    damaged manifest: one line each, exit 2."""
    c = tmp_path / "c.png"
    write_image(c, 12, 10, 1)
    base = ["stylize", str(c), "--style", str(c), "--size", "12", "--iters", "2"]
    cases = [(base + ["-o", str(tmp_path)] + FAST, "output path is a folder"),
             (base + ["-o", str(tmp_path / "o.png"), "--iters", "0"] + FAST, "--iters must be an integer >= 1")]
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


def test_job_status_warns_of_unreadable_manifest_lines(tmp_path, capsys):
    c = tmp_path / "in" / "c.png"
    c.parent.mkdir()
    write_image(c, 10, 10, 1)
    s = write_image(tmp_path / "s.png", 10, 10, 3)
    out = tmp_path / "out"
    assert main(["stylize", str(c), "--style", str(s), "--out-dir", str(out), "--size", "10", "--iters", "2",
                 "--quiet"] + FAST) == 0
    capsys.readouterr()
    manifest = out / "stylegrad-job.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:1] + ["{torn"] + lines[1:]) + "\n")
    assert main(["job", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 of 1 done" in text and "warning: 1 unreadable manifest line(s) skipped (line 2)" in text
