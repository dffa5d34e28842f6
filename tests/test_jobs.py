"""Job folders: manifest, resume, settings changes, worker processes (bit-identical outputs,
dead workers), status and the job benchmark. Random weights, tiny images."""
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylegrad import StyleConfig
from stylegrad.cli.main import main
from stylegrad.jobs import JobFolderBusy, JobListener, JobRequest, run_job
from stylegrad.jobs.local_pool import LocalPool
from stylegrad.jobs.manifest import MANIFEST_NAME, ManifestWriter, is_locked, load_state, read_records
from stylegrad.jobs.runner import InlineExecutor, plan_batches
from stylegrad.jobs.settings import NON_PIXEL_FIELDS, pixel_settings, settings_hash
from tests import job_hooks
from tests.helpers import write_image
from tests.helpers import bit_exact_needs_fixed_reductions

FAST = ["--weights", "random", "--quiet"]
# Fields of a record that must agree between two ways of running the same job (the rest --
# seconds, device, host, time, run id -- describe where and when, not what).
SAME = ("input", "input_sha256", "styles_sha256", "config_hash", "output", "output_sha256", "status", "batch", "backend")


def _images(folder, sizes, seed0=0):
    folder.mkdir(parents=True, exist_ok=True)
    return [write_image(folder / f"{i}.png", w, h, seed=seed0 + i) for i, (w, h) in enumerate(sizes)]


def _image_records(job_dir):
    return [r for r in read_records(Path(job_dir) / MANIFEST_NAME) if r["kind"] == "image"]


def _by_input(records):
    return {r["input"]: {k: r.get(k) for k in SAME} for r in records}


def _outputs(job_dir):
    return {p.name: p.read_bytes() for p in sorted(Path(job_dir).glob("*.png"))}


# -- settings ----------------------------------------------------------------------------------

def test_settings_cover_every_config_field_but_the_listed_ones():
    cfg = StyleConfig(weights="random")
    s = pixel_settings(cfg, "cpu", 1)
    fields = {f.name for f in dataclasses.fields(StyleConfig)}
    assert set(s) == (fields - NON_PIXEL_FIELDS) | {"device_type", "cpu_threads"}
    assert NON_PIXEL_FIELDS <= fields                          # the list names real fields
    h = settings_hash(s)
    # what does not change pixels leaves the hash alone ...
    assert settings_hash(pixel_settings(cfg.replace(print_every=7, save_every=3), "cpu", 1)) == h
    assert settings_hash(pixel_settings(cfg.replace(device="cuda:1"), "cuda", None)) == \
        settings_hash(pixel_settings(cfg.replace(device="cuda:0"), "cuda", None))
    # ... every one of these changes it
    for change in ({"iters": 501}, {"style_weight": 2e7}, {"batch_size": 2}, {"seed": 1}, {"pool": "max"},
                   {"style_layers": ("relu1_1",)}, {"lbfgs_history": 5}, {"precision": "bf16"}):
        assert settings_hash(pixel_settings(cfg.replace(**change), "cpu", 1)) != h, change
    assert settings_hash(pixel_settings(cfg, "cpu", 2)) != h                 # threads change the bits
    assert settings_hash(pixel_settings(cfg, "cuda", None)) != h


def test_settings_hash_files_given_by_path(tmp_path):
    init = write_image(tmp_path / "init.png", 8, 8, seed=1)
    cfg = StyleConfig(weights="random", init=str(init))
    before = settings_hash(pixel_settings(cfg, "cpu", 1))
    write_image(init, 8, 8, seed=2)                             # same path, other contents
    assert settings_hash(pixel_settings(cfg, "cpu", 1)) != before


def test_a_weights_file_is_hashed_whatever_its_name(tmp_path):
    from stylegrad.model.weights import random_vgg, write_state_dict

    f = tmp_path / "random_vgg.pth"                 # a file, though its name starts like "random"
    write_state_dict(random_vgg("vgg16", 0), f)
    settings = pixel_settings(StyleConfig(weights=str(f), model="vgg16"), "cpu", 1)
    assert len(settings["weights_sha256"]) == 64
    write_state_dict(random_vgg("vgg16", 1), f)
    assert pixel_settings(StyleConfig(weights=str(f), model="vgg16"), "cpu", 1)["weights_sha256"] != settings["weights_sha256"]
    assert "weights_sha256" not in pixel_settings(StyleConfig(weights="random:3"), "cpu", 1)


# -- manifest ----------------------------------------------------------------------------------

def test_manifest_skips_a_torn_line_and_locks_the_folder(tmp_path):
    run = {"kind": "run", "run": "r1", "settings": {}, "inputs": [], "outputs": []}
    with ManifestWriter(tmp_path) as m:
        m.append(run)
        m.append({"kind": "image", "input": "/a", "status": "ok", "run": "r1"})
        with pytest.raises(JobFolderBusy, match="another stylegrad process"):
            ManifestWriter(tmp_path)
        assert is_locked(tmp_path)
    assert not is_locked(tmp_path)
    with open(tmp_path / MANIFEST_NAME, "ab") as f:
        f.write(b'{"kind": "image", "input": "/b", "sta')          # a crash inside a write
    with ManifestWriter(tmp_path) as m:
        m.append({"kind": "image", "input": "/c", "status": "ok", "run": "r1"})
    recs = read_records(tmp_path / MANIFEST_NAME)
    assert [r["input"] for r in recs[1:]] == ["/a", "/c"]
    assert (tmp_path / MANIFEST_NAME).read_text().splitlines()[-1].startswith('{"kind":"image","input":"/c"')


def test_plan_groups_by_size_in_order(tmp_path):
    paths = _images(tmp_path, [(16, 12), (12, 16), (16, 12), (16, 12), (16, 12)])
    (tmp_path / "bad.png").write_bytes(b"nope")
    paths.append(tmp_path / "bad.png")
    assert plan_batches(paths, 16, 2) == [[0, 2], [3, 4], [1], [5]]
    assert plan_batches(paths, 16, 1) == [[i] for i in range(6)]


# -- one process: records, resume, settings changes ---------------------------------------------

def test_job_folder_manifest_resume_and_settings_change(tmp_path, capsys):
    ins = _images(tmp_path / "in", [(20, 14), (14, 20), (20, 14)])
    (tmp_path / "in" / "3.png").write_bytes(b"corrupt")
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    out = tmp_path / "out"
    argv = ["stylize", str(tmp_path / "in"), "--style", str(s), "--out-dir", str(out), "--size", "16",
            "--iters", "3", "--threads", "1"] + FAST
    assert main(argv) == 1                                        # one bad image
    recs = _image_records(out)
    assert [Path(r["input"]).name for r in recs] == ["0.png", "1.png", "2.png", "3.png"]
    for r in recs[:3]:
        assert r["status"] == "ok" and (out / r["output"]).exists()
        assert set(r) >= {"input", "input_sha256", "styles_sha256", "config_hash", "output", "output_sha256",
                          "seconds", "backend", "device", "host", "finished"}
        assert r["device"] == "cpu" and r["backend"] == "torch" and len(r["output_sha256"]) == 64
    assert recs[3]["status"] == "error" and "not an image" in recs[3]["error"]
    assert sorted(os.listdir(out)) == ["0.png", "1.png", "2.png", MANIFEST_NAME]

    # resume: nothing done is redone; the failed image is tried again
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main(argv + ["--resume"]) == 1
    new = _image_records(out)[4:]
    assert [Path(r["input"]).name for r in new] == ["3.png"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes

    # a changed output, a changed input and a missing output are redone
    (out / "0.png").write_bytes(b"tampered")
    write_image(ins[1], 14, 20, seed=42)
    (out / "2.png").unlink()
    capsys.readouterr()
    assert main(argv[:-1] + ["--resume"]) == 1                   # not --quiet: see the notes
    err = capsys.readouterr().err
    assert "their input changed" in err and "their output is missing or changed" in err
    new = _image_records(out)[5:]
    assert sorted(Path(r["input"]).name for r in new) == ["0.png", "1.png", "2.png", "3.png"]

    # other settings are refused, naming the fields; --force runs them
    assert main(argv[:6] + ["--size", "12", "--iters", "4", "--resume"] + FAST) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "iters (3 -> 4)" in err and "size (16 -> 12)" in err and "--force" in err
    assert main(argv + ["--threads", "2", "--resume"]) == 2
    assert "cpu_threads (1 -> 2)" in capsys.readouterr().err
    assert main(argv[:6] + ["--size", "12", "--iters", "4", "--resume", "--force"] + FAST) == 1
    last = _image_records(out)[-4:]
    assert len({r["config_hash"] for r in last}) == 1 and last[0]["config_hash"] != recs[0]["config_hash"]


def test_job_status(tmp_path, capsys):
    _images(tmp_path / "in", [(12, 12), (12, 12)])
    (tmp_path / "in" / "2.png").write_bytes(b"x")
    s = write_image(tmp_path / "s.png", 12, 12, seed=9)
    out = tmp_path / "out"
    main(["stylize", str(tmp_path / "in"), "--style", str(s), "--out-dir", str(out), "--size", "12", "--iters", "2"]
         + FAST)
    capsys.readouterr()
    assert main(["job", "status", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["inputs"] == 3 and st["done"] == 2 and st["remaining"] == 0 and not st["running"]
    assert [Path(f["input"]).name for f in st["failed"]] == ["2.png"] and "not an image" in st["failed"][0]["error"]
    assert st["images_per_hour"] > 0 and st["seconds_per_image"]["p50"] > 0
    (out / "1.png").unlink()
    assert main(["job", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 of 3 done, 1 failed, 1 remaining" in text and "images/hour" in text and "2.png" in text
    assert main(["job", "status", str(tmp_path / "in")]) == 2
    assert "no stylegrad job" in capsys.readouterr().err


def test_job_writes_snapshots_and_stops_cleanly_on_sigterm(tmp_path):
    _images(tmp_path / "in", [(12, 12)] * 8)
    s = write_image(tmp_path / "s.png", 12, 12, seed=9)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "stylegrad.cli.main", "stylize", str(tmp_path / "in"), "--style", str(s), "--size", "12",
            "--iters", "30", "--save-every", "10", "--out-dir", str(out)] + FAST
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not _image_records(out):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err
    state = load_state(out)
    done = [r for r in state.images if r["status"] == "ok"]
    assert 1 <= len(done) < 8 and state.ends[state.runs[0]["run"]]["interrupted"] is True
    first = Path(done[0]["output"]).stem
    assert sorted(p.name for p in out.glob(first + ".*")) == [f"{first}.iter0010.png", f"{first}.iter0020.png",
                                                               f"{first}.png"]
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("argv,needle", [
    (["-o", "x.png", "--resume"], "--resume works with --out-dir"),
    (["--out-dir", "o", "--ray-bytes"], "--ray-bytes needs --ray"),
    (["--out-dir", "o", "--devices", "all"], "no CUDA device"),
    (["--out-dir", "o", "--devices", "cpu,cuda:0"], None),
    (["--out-dir", "o", "--ray", "auto", "--devices", "cpu"], "not --devices"),
    (["--out-dir", "o", "--workers", "0"], "integer >= 1"),
])
def test_job_usage_errors(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "c.png", 8, 8)
    rc = main(["stylize", "c.png", "--style", "c.png"] + argv + FAST)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("stylegrad: error:"), err
    if needle:
        assert needle in err
    assert not (tmp_path / "o" / MANIFEST_NAME).exists()


# -- worker processes --------------------------------------------------------------------------

def test_worker_processes_give_the_same_bytes_and_records_as_one_process(tmp_path, capsys):
    """Batches of 2 over mixed sizes: the batch partners, the thread count (1 per image: the
    default of 2 workers on a 2-core machine, given explicitly so that it holds on any machine) and
    the code are the same in both runs, so every byte is. Workers relay --json progress."""
    _images(tmp_path / "in", [(20, 14), (14, 20), (20, 14), (20, 14), (14, 20)])
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    base = ["stylize", str(tmp_path / "in"), "--style", str(s), "--size", "18", "--iters", "4",
            "--batch-size", "2", "--threads", "1"] + FAST
    assert main(base + ["--out-dir", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    assert main(base + ["--out-dir", str(tmp_path / "two"), "--devices", "cpu", "--workers", "2", "--json"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    iters = {}
    for l in lines:
        if "iter" in l:
            iters.setdefault(Path(l["image"]).name, []).append(l["iter"])
    assert iters == {f"{i}.png": [0, 1, 2, 3, 4] for i in range(5)}
    assert sum(l.get("status") == "ok" for l in lines) == 5 and lines[-1]["summary"] == "job"
    assert lines[-1]["workers"] == 2 and lines[-1]["ok"] == 5
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert len(one) == 5 and one == two
    r1, r2 = _image_records(tmp_path / "one"), _image_records(tmp_path / "two")
    assert _by_input(r1) == _by_input(r2)
    assert sorted(r["batch"] for r in r1) == [1, 2, 2, 2, 2]


@pytest.mark.slow
def test_dead_workers_are_restarted_and_a_poison_image_is_an_error(tmp_path):
    """One image kills its worker every time (retried once, then an error record); a busy worker
    is also killed from outside mid-job. The job still completes, with the same bytes."""
    ins = _images(tmp_path / "in", [(16, 16)] * 5)
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    cfg = StyleConfig(size=16, iters=8, weights="random", print_every=100)

    def request(d):
        return JobRequest(tmp_path / d, ins, [tmp_path / d / p.name for p in ins], cfg, [str(s)])

    run_job(request("ref"), InlineExecutor("cpu"))
    pool = LocalPool(["cpu", "cpu"], before_task=functools.partial(job_hooks.crash_on, "2.png"))
    notes, killed = [], []

    class Killer(JobListener):
        def note(self, m):
            notes.append(m)

        def record(self, rec, o):
            busy = [s.pid for s in pool._slots if s.task is not None and s.pid]
            if not killed and busy:
                killed.append(busy[0])
                os.kill(busy[0], signal.SIGKILL)

    summary = run_job(request("pool"), pool, Killer())
    assert killed and summary.ok == 4 and summary.failed == 1
    recs = {Path(r["input"]).name: r for r in _image_records(tmp_path / "pool")}
    assert recs["2.png"]["status"] == "error" and "died 2 times" in recs["2.png"]["error"]
    assert any("retrying it" in n for n in notes)
    ref, got = _outputs(tmp_path / "ref"), _outputs(tmp_path / "pool")
    assert set(got) == set(ref) - {"2.png"} and all(got[k] == ref[k] for k in got)
    assert pool.restarts >= 3


@bit_exact_needs_fixed_reductions
@pytest.mark.slow
def test_killed_driver_leaves_no_workers_and_resume_redoes_only_the_rest(tmp_path):
    """SIGKILL the CLI halfway through a 2-worker job: its workers die with it, the manifest keeps
    every finished image, and --resume (here in one process) computes only the others -- with
    the bytes a run from scratch gives."""
    ins = _images(tmp_path / "in", [(16, 16)] * 6)
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    out = tmp_path / "out"
    args = ["stylize", str(tmp_path / "in"), "--style", str(s), "--size", "16", "--iters", "40"] + FAST
    proc = subprocess.Popen([sys.executable, "-m", "stylegrad.cli.main"] + args + ["--out-dir", str(out), "--devices", "cpu",
                            "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    workers = set()
    while time.time() < deadline and proc.poll() is None:
        try:
            workers |= set(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())
        except OSError:
            pass
        if len(_image_records(out)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {r["input"] for r in _image_records(out) if r["status"] == "ok"}
    assert 2 <= len(done_before) < 6
    time.sleep(1.0)
    assert workers and not [p for p in workers if _running_worker(p)], "workers outlived the driver"
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert main(args + ["--out-dir", str(out), "--resume"]) == 0
    state = load_state(out)
    last_run = state.runs[-1]["run"]
    redone = {r["input"] for r in state.images if r["run"] == last_run}
    assert redone == {str(p) for p in ins} - done_before
    assert main(args + ["--out-dir", str(tmp_path / "fresh")]) == 0
    after, fresh = _outputs(out), _outputs(tmp_path / "fresh")
    assert after == fresh and all(after[k] == v for k, v in before.items())


def _running_worker(pid) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return b"spawn_main" in cmd and "State:\tZ" not in state


# -- benchmark ---------------------------------------------------------------------------------

def test_bench_job_reports_images_per_hour_and_scaling(capsys):
    assert main(["bench", "--job", "--images", "2", "--size", "16", "--iters", "2", "--workers", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    names = [x["name"] for x in r["runs"]]
    assert names[0] == "one process" and names[-1] == "pool"
    for x in r["runs"]:
        assert x["ok"] == 2 and x["images_per_hour"] > 0 and x["wall_seconds"] > 0
    assert r["runs"][-1]["workers"] == 2
    assert r["scaling_ratio"] == pytest.approx(r["runs"][-1]["images_per_hour"] / r["runs"][0]["images_per_hour"],
                                               rel=1e-2)
    assert r["identical_outputs"] is True


def test_usable_cores_follows_the_affinity_mask(monkeypatch):
    import os

    from stylegrad.system import usable_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1


def test_snapshots_follow_one_rule_for_o_runs_and_jobs(tmp_path):
    """``write_snapshot`` (both paths call it): every --save-every iterate but the output itself,
    which is the last scale's last iterate or where --tol stopped it; a failed write is a warning."""
    from stylegrad.jobs.work import is_output_iterate, write_snapshot
    from stylegrad.run.stylizer import Progress

    import torch

    cfg = StyleConfig(weights="random", save_every=1)
    img = torch.rand(3, 4, 5)
    out = tmp_path / "o.png"

    def p(it, iters=5, scale=1, scales=1, stopped=False):
        return Progress("a", it, iters, 1.0, 0.5, 0.5, 0.0, 1.0, snapshot=img, scale=scale, scales=scales,
                        stopped=stopped)

    assert not is_output_iterate(p(4)) and is_output_iterate(p(5)) and is_output_iterate(p(3, stopped=True))
    assert not is_output_iterate(p(5, scale=1, scales=2)) and not is_output_iterate(p(3, scale=1, scales=2, stopped=True))
    assert write_snapshot(p(2), out, cfg) is None and (tmp_path / "o.iter0002.png").is_file()
    assert write_snapshot(p(3, stopped=True), out, cfg) is None and not (tmp_path / "o.iter0003.png").exists()
    assert write_snapshot(p(2), out, cfg.replace(save_every=0)) is None
    warning = write_snapshot(p(2), tmp_path / "missing" / "o.png", cfg)
    assert warning.startswith("snapshot 2 not written: ")


def test_optimise_and_write_writes_only_what_it_may(tmp_path):
    """The one image-writing path (-o runs and job workers): a None output is computed, not
    written; a failed write is that image's error, not the batch's; the others are written."""
    import torch

    from stylegrad import Stylizer
    from stylegrad.jobs.work import optimise_and_write

    cfg = StyleConfig(weights="random", backend="reference", size=12, iters=2, lbfgs_history=3)
    g = torch.Generator().manual_seed(0)
    tensors = [torch.rand(3, 12, 12, generator=g) for _ in range(3)]
    outs = [tmp_path / "a.png", None, tmp_path / "missing" / "c.png"]
    st = Stylizer(cfg)
    try:
        st.set_styles([torch.rand(3, 12, 12, generator=g)])
        seen = []
        done = optimise_and_write(st, tensors, ["a", "b", "c"], outs, cfg, on_progress=lambda p: seen.append(p.image))
    finally:
        st.close()
    assert [w.name for w in done] == ["a", "b", "c"] and set(seen) == {"a", "b", "c"}
    assert done[0].status == "ok" and (tmp_path / "a.png").is_file()
    assert done[1].status == "ok" and done[1].result.image.shape[-2:] == (12, 12)
    assert done[2].status == "error" and "c.png" in done[2].error and not done[2].no_space
