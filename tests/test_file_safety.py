"""Files the user did not name are never touched: snapshots obey the outputs' rule, lock files
and manifests are never opened through links, written files get ordinary permissions, one
output lock for -o runs and job workers, the stale-temporary sweep removes only its own regular
files, a refused run leaves no folder behind, an interrupted write leaves no temporary, and a
FIFO or other non-regular input is refused without blocking. Tiny images and random weights."""
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stylegrad import errors
from stylegrad.cli.main import main
from stylegrad.config import StyleConfig
from stylegrad.errors import ImageError, OutputLockedError, WeightsError
from stylegrad.io import fileio
from stylegrad.io import images as imgs
from stylegrad.jobs import InlineExecutor, JobRequest, run_job
import stylegrad
from tests.helpers import write_image

FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5", "--size", "12", "--quiet"]


def _bytes(path):
    return Path(path).read_bytes()


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- snapshots: the outputs' rule, checked before any compute -----------------------------------

def test_a_snapshot_that_is_an_input_is_refused_before_any_compute(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    photo = write_image(d / "photo.png", 12, 12, 1)
    style = write_image(d / "out.iter0002.png", 12, 12, 2)      # the name of out.png's snapshot 2
    before = _bytes(style)
    rc = main(["stylize", str(photo), "--style", str(style), "-o", str(d / "out.png"), "--save-every", "2",
               "--iters", "4"] + FAST)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "snapshot" in err[0] and "is an input image" in err[0], err
    assert _bytes(style) == before and not (d / "out.png").exists()


def test_an_existing_snapshot_is_replaced_only_with_overwrite(tmp_path, capsys):
    photo = write_image(tmp_path / "photo.png", 12, 12, 1)
    painting = write_image(tmp_path / "painting.png", 12, 12, 2)
    snap = write_image(tmp_path / "out.iter0002.png", 12, 12, 3)   # somebody's file
    before = _bytes(snap)
    argv = ["stylize", str(photo), "--style", str(painting), "-o", str(tmp_path / "out.png"), "--save-every", "2",
            "--iters", "4"] + FAST
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "out.iter0002.png exists" in err and "--overwrite" in err
    assert _bytes(snap) == before and not (tmp_path / "out.png").exists()
    # the same rule in a job folder (its snapshots are not named either)
    out = tmp_path / "job"
    out.mkdir()
    write_image(out / "photo.iter0002.png", 12, 12, 4)
    assert main(["stylize", str(photo), "--style", str(painting), "--out-dir", str(out), "--save-every", "2",
                 "--iters", "4"] + FAST) == 2
    assert "photo.iter0002.png exists" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["photo.iter0002.png"]
    # --overwrite: replaced, and the run is ok
    assert main(argv + ["--overwrite"]) == 0
    assert _bytes(snap) != before and (tmp_path / "out.png").exists()


# -- lock file and manifest: never through a link -----------------------------------------------

def test_a_link_planted_at_the_lock_file_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    c = write_image(tmp_path / "c.png", 12, 12)
    out = tmp_path / "o.png"
    lock = fileio.lock_path(out)
    lock.symlink_to(victim)
    assert main(["stylize", str(c), "--style", str(c), "-o", str(out), "--iters", "2"] + FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic link" in err[0] and str(lock) in err[0], err
    assert victim.read_text() == "precious\n" and not out.exists()
    # a hard link is refused too (writing the pid would change the other file)
    lock.unlink()
    os.link(victim, lock)
    with pytest.raises(errors.UnsafeFileError, match="other hard links"):
        with fileio.output_lock(out):
            pass
    assert victim.read_text() == "precious\n"
    # a file at the lock's name holding data is not a lock file: left alone
    lock.unlink()
    lock.write_text("x" * 100)
    with pytest.raises(errors.UnsafeFileError, match="holds data"):
        with fileio.output_lock(out):
            pass
    assert lock.read_text() == "x" * 100


def test_a_link_planted_at_the_manifest_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    c = write_image(tmp_path / "c.png", 12, 12)
    out = tmp_path / "job"
    out.mkdir()
    (out / "stylegrad-job.jsonl").symlink_to(victim)
    assert main(["stylize", str(c), "--style", str(c), "--out-dir", str(out), "--iters", "2"] + FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic link" in err[0] and "stylegrad-job.jsonl" in err[0], err
    assert victim.read_text() == "precious\n" and not (out / "c.png").exists()
    assert main(["job", "status", str(out)]) == 2                  # reading refuses it too
    assert "symbolic link" in capsys.readouterr().err


# -- permissions ------------------------------------------------------------------------------

def test_written_files_get_ordinary_permissions_never_special_bits(tmp_path):
    plain = 0o666 & ~fileio._umask()
    out = tmp_path / "o.png"
    imgs.save_image(torch.rand(3, 4, 4), out)
    assert stat.S_IMODE(out.stat().st_mode) == plain
    os.chmod(out, 0o6755)                                  # setuid + setgid on the old file
    imgs.save_image(torch.rand(3, 4, 4), out)
    assert stat.S_IMODE(out.stat().st_mode) == plain
    os.chmod(out, 0o1600)
    fileio.write_json_atomic(out, {"a": 1})
    assert stat.S_IMODE(out.stat().st_mode) == plain


# -- one lock rule for -o and job outputs -------------------------------------------------------

def test_a_job_does_not_write_an_output_another_process_holds(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    a, b = write_image(d / "a.png", 12, 12, 1), write_image(d / "b.png", 12, 12, 2)
    out = tmp_path / "job"
    out.mkdir()
    with fileio.output_lock(out / "a.png"):              # as `stylize -o job/a.png` holds it
        rc = main(["stylize", str(d), "--style", str(a), "--out-dir", str(out), "--iters", "2"] + FAST)
        assert rc == 1 and not (out / "a.png").exists() and (out / "b.png").exists()
        assert f"being written by another process (pid {os.getpid()})" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["b.png", "stylegrad-job.jsonl"]   # no lock file left


# -- the stale-temporary sweep ------------------------------------------------------------------

def test_the_sweep_removes_only_our_regular_files_of_dead_processes(tmp_path):
    old = time.time() - 2 * fileio.STALE_SECONDS
    dead, alive = _dead_pid(), os.getpid()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    ours = tmp_path / f".o.png.stylegrad-{dead}-abc123.tmp"          # a killed process's: swept
    live = tmp_path / f".o.png.stylegrad-{alive}-def456.tmp"         # a running process's: kept
    fresh = tmp_path / f".p.png.stylegrad-{dead}-ghi789.tmp"         # too recent: kept
    unowned = tmp_path / ".o.png.stylegrad-abc123.tmp"               # no pid in its name: kept
    foreign = tmp_path / ".o.png.tmp"
    folder = tmp_path / f".cache.stylegrad-{dead}-xyz.tmp"           # a folder: never removed
    link = tmp_path / f".q.png.stylegrad-{dead}-lnk.tmp"             # a link: neither it nor its target
    lock_link = tmp_path / ".r.png.stylegrad-lock"
    for f in (ours, live, fresh, unowned, foreign):
        f.write_bytes(b"x")
    folder.mkdir()
    (folder / "inner").write_bytes(b"x")
    link.symlink_to(victim)
    lock_link.symlink_to(victim)
    for f in (ours, live, unowned, foreign, folder, victim):
        os.utime(f, (old, old))
    for f in (link, lock_link):
        os.utime(f, (old, old), follow_symlinks=False)
    imgs.save_image(torch.rand(3, 4, 4), tmp_path / "o.png")   # the first write into the folder sweeps it
    assert not ours.exists()
    assert live.exists() and fresh.exists() and unowned.exists() and foreign.exists()
    assert folder.is_dir() and (folder / "inner").exists()
    assert link.is_symlink() and lock_link.is_symlink() and victim.read_text() == "precious\n"
    assert [n for n in os.listdir(tmp_path) if fileio.temporary_owner(n) == alive] == [live.name]


def test_temporaries_name_their_process(tmp_path):
    with fileio.atomic_path(tmp_path / "x.png") as tmp:
        assert fileio.temporary_owner(tmp.name) == os.getpid()
        tmp.write_bytes(b"x")
    assert os.listdir(tmp_path) == ["x.png"]


# -- a refused run leaves no folder it created --------------------------------------------------

def test_a_refused_run_leaves_no_out_dir_behind(tmp_path, capsys):
    c = write_image(tmp_path / "c.png", 12, 12)
    out = tmp_path / "new" / "job"
    # refused by the memory check, after the folders were checked
    assert main(["stylize", str(c), "--style", str(c), "--out-dir", str(out), "--iters", "2",
                 "--max-memory", "2M"] + FAST) == 2
    assert "memory" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    # refused inside the job (its workers cannot start): the folders it made are removed again
    class Broken(InlineExecutor):
        def start(self, spec, note, n_tasks=1):
            raise OutputLockedError("cannot start")

    req = JobRequest(out, [c], [out / "c.png"], StyleConfig(weights="random", size=12, iters=2), [str(c)])
    with pytest.raises(OutputLockedError):
        run_job(req, Broken())
    assert not (tmp_path / "new").exists()
    # a folder that cannot be created is a usage error before any work
    (tmp_path / "file").write_text("x")
    assert main(["stylize", str(c), "--style", str(c), "--out-dir", str(tmp_path / "file" / "sub"),
                 "--iters", "2"] + FAST) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_flock_nowait_is_the_one_lock_rule(tmp_path):
    import os

    from stylegrad.io.fileio import LOCK_BUSY, LOCK_HELD, flock_nowait

    path = tmp_path / "lockme"
    path.write_bytes(b"")
    a, b = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)   # two open files: flock sees two owners
    try:
        assert flock_nowait(a) == LOCK_HELD
        assert flock_nowait(b) == LOCK_BUSY
        assert flock_nowait(b, shared=True) == LOCK_BUSY
        os.close(a)
        a = None
        assert flock_nowait(b, shared=True) == LOCK_HELD
    finally:
        for fd in (a, b):
            if fd is not None:
                os.close(fd)


REFERENCE_FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5"]

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
        assert main(["stylize", str(c), "--style", str(fifo), "-o", str(tmp_path / "o.png")] + REFERENCE_FAST) == 2
        assert "FIFO" in capsys.readouterr().err
        with pytest.raises(WeightsError, match="not a regular file"):
            stylegrad.model.weights.load_vgg(str(fifo))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_interrupted_write_leaves_no_temporary(tmp_path):
    from stylegrad.errors import Terminated

    with pytest.raises(Terminated):
        with fileio.atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"partial")
            raise Terminated()
    assert os.listdir(tmp_path) == []


def test_output_lock_is_exclusive_and_named(tmp_path, capsys):
    out = tmp_path / "o.png"
    with fileio.output_lock(out):
        assert fileio.lock_path(out).exists()
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            with fileio.output_lock(out):
                pass
        c = write_image(tmp_path / "c.png", 8, 8)
        rc = main(["stylize", str(c), "--style", str(c), "-o", str(out), "--iters", "1", "--quiet"] + REFERENCE_FAST)
        assert rc == 1 and "being written by another process" in capsys.readouterr().err and not out.exists()
    assert not fileio.lock_path(out).exists()          # released and removed
    with fileio.output_lock(out):                      # and free again
        pass
