"""SIGTERM: an -o run exits 143 and leaves nothing partial. During a job: the workers (processes or Ray actors) are stopped, no temporary or lock
file is left, the manifest stays whole JSON lines ending in an `interrupted` record, the CLI
exits 143, and --resume finishes the job. Writes are slowed down in the job's processes
(slow_writes/sitecustomize.py) so that the signal lands while a worker is inside a write."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylegrad.cli.main import main
from tests.helpers import write_image

HOOKS = Path(__file__).resolve().parent / "slow_writes"
ROOT = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5", "--size", "16"]


def _start(tmp_path, extra, n=4):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(n):
        write_image(d / f"c{i}.png", 16, 16, i)
    out = tmp_path / "job"
    style = tmp_path / "style.png"          # a painting of its own: a photo as its own painting has nothing to optimise
    write_image(style, 16, 16, 99)
    args = ["stylize", str(d), "--style", str(style), "--out-dir", str(out), "--iters", "6",
            "--save-every", "1"] + FAST
    env = dict(os.environ, STYLEGRAD_TEST_SLOW_WRITES="0.4", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HOOKS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "stylegrad.cli.main"] + args + extra, env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, out, args


def _temporaries(out):
    return [n for n in os.listdir(out) if ".stylegrad-" in n] if out.is_dir() else []


def _wait_for_a_write(proc, out, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(n.endswith(".tmp") for n in _temporaries(out)):
            return True
        time.sleep(0.02)
    return False


def _session_processes(sid):
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(p.name))
    return found


def _stop_and_check(proc, out, args, tmp_path, settle=15.0):
    os.kill(proc.pid, signal.SIGTERM)
    try:
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM)" in err and "Traceback" not in err and "internal error" not in err, err[-2000:]
    deadline = time.time() + settle
    while _session_processes(proc.pid) and time.time() < deadline:      # workers stopped with it
        time.sleep(0.1)
    left = _session_processes(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, "processes of the job outlived it"
    assert _temporaries(out) == []                                       # no temporary, no lock file
    raw = (out / "stylegrad-job.jsonl").read_text()
    recs = [json.loads(l) for l in raw.splitlines()]                     # whole JSON lines
    assert raw.endswith("\n") and recs[0]["kind"] == "run"
    assert recs[-1]["kind"] == "end" and recs[-1]["interrupted"] is True
    done = sum(1 for r in recs if r["kind"] == "image" and r["status"] == "ok")
    assert done < 4
    # --resume (here in this process, writes at full speed) finishes the job
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(args + ["--resume", "--overwrite", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    recs = [json.loads(l) for l in (out / "stylegrad-job.jsonl").read_text().splitlines()]
    last = recs[-1]
    assert last["kind"] == "end" and last["ok"] == 4 - done and last["skipped"] == done
    assert sorted(p.name for p in out.glob("c?.png")) == ["c0.png", "c1.png", "c2.png", "c3.png"]


def test_sigterm_stops_worker_processes_cleanly_and_resume_finishes(tmp_path):
    proc, out, args = _start(tmp_path, ["--workers", "2"])
    assert _wait_for_a_write(proc, out, 180), proc.communicate(timeout=60)[1][-2000:]
    time.sleep(0.1)
    _stop_and_check(proc, out, args, tmp_path)


@pytest.mark.slow
def test_sigterm_stops_ray_actors_cleanly_and_resume_finishes(tmp_path):
    pytest.importorskip("ray")
    proc, out, args = _start(tmp_path, ["--ray", "local", "--workers", "1"])
    assert _wait_for_a_write(proc, out, 300), proc.communicate(timeout=60)[1][-2000:]
    time.sleep(0.1)
    _stop_and_check(proc, out, args, tmp_path, settle=60.0)


REFERENCE_FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5"]

def test_sigterm_exits_143_and_leaves_nothing_partial(tmp_path):
    """-o (job folders: tests/test_jobs.py): SIGTERM mid-run, exit 143, nothing left behind."""
    c = write_image(tmp_path / "c.png", 24, 24)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "stylegrad.cli.main", "stylize", str(c), "--style", str(c), "-o", str(out / "o.png"),
           "--size", "24", "--iters", "100000", "--print-every", "1"] + REFERENCE_FAST
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
