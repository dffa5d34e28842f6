"""Job folders: a full disk is a clear error and the manifest stays whole (--resume finishes the
job), a damaged or foreign manifest is named with its line, a rerun never silently redoes or
clobbers work (--resume / --fresh), and `job status` tells a killed run from a running one and
warns of unreadable manifest lines. Tiny images and random weights."""
import errno
import json
import os
import shlex
from pathlib import Path

import pytest

from stylegrad.cli.main import main
from stylegrad.io import fileio
from stylegrad.jobs import manifest as manifest_mod
from stylegrad.jobs.manifest import MANIFEST_NAME, ManifestWriter
from tests.helpers import write_image

FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5", "--size", "12", "--iters", "2",
        "--quiet"]


def _job(tmp_path, n=2):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    for i in range(n):
        write_image(d / f"c{i}.png", 12, 12, i)
    out = tmp_path / "job"
    style = tmp_path / "style.png"          # a painting of its own: a photo as its own painting has nothing to optimise
    write_image(style, 12, 12, 99)
    return d, out, ["stylize", str(d), "--style", str(style), "--out-dir", str(out)] + FAST


def _lines(out):
    raw = (out / MANIFEST_NAME).read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(l) for l in raw.decode().splitlines()]          # every line whole JSON


# -- full disk ----------------------------------------------------------------------------------

def test_a_full_disk_while_recording_is_one_clear_line_and_resume_finishes(tmp_path, capsys, monkeypatch):
    d, out, argv = _job(tmp_path, 3)
    real_write = os.write
    state = {"images": 0}

    def disk_fills(fd, data):
        if b'"kind":"image"' in bytes(data):
            state["images"] += 1
            if state["images"] == 2:           # the second record: half of it fits, then the disk is full
                n = real_write(fd, bytes(data)[:len(data) // 2])
                if n < len(data):
                    return n
        return real_write(fd, data)

    monkeypatch.setattr(manifest_mod.os, "write", disk_fills)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" not in err[0], err
    assert "No space left on device" in err[0] and str(out / MANIFEST_NAME) in err[0] and "needed" in err[0]
    assert "free" in err[0] and "--resume" in err[0]
    recs = _lines(out)
    assert [r["kind"] for r in recs] == ["run", "image", "end"]        # the torn record was cut back off
    assert recs[-1]["interrupted"] is True
    monkeypatch.undo()                                                # space freed
    assert main(argv + ["--resume"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["c0.png", "c1.png", "c2.png", MANIFEST_NAME]
    assert main(["job", "status", str(out), "--verify"]) == 0
    assert "3 of 3 done, 0 failed, 0 remaining" in capsys.readouterr().out


@pytest.mark.parametrize("code,needle", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EDQUOT, "Disk quota exceeded"),
                                         (errno.EROFS, "Read-only file system")])
def test_a_full_disk_while_writing_an_image_stops_the_job_cleanly(tmp_path, capsys, monkeypatch, code, needle):
    d, out, argv = _job(tmp_path, 3)
    real_fsync = fileio._fsync
    calls = {"n": 0}

    def fails_second(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(code, os.strerror(code))
        return real_fsync(path)

    monkeypatch.setattr(fileio, "_fsync", fails_second)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "c1.png" in err[0] and "internal error" not in err[0], err
    if code != errno.EROFS:
        assert "needed" in err[0]
    recs = _lines(out)
    assert [r.get("status") for r in recs if r["kind"] == "image"] == ["ok"]   # c1 is not called failed
    assert recs[-1]["kind"] == "end" and recs[-1]["interrupted"] is True
    assert not [n for n in os.listdir(out) if ".stylegrad-" in n]            # no temporary, no lock left
    monkeypatch.undo()
    assert main(argv + ["--resume"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["c0.png", "c1.png", "c2.png", MANIFEST_NAME]


def test_a_torn_last_line_is_cut_off_when_the_folder_is_next_run(tmp_path, capsys):
    d, out, argv = _job(tmp_path, 2)
    assert main(argv) == 0
    with open(out / MANIFEST_NAME, "ab") as f:
        f.write(b'{"kind":"image","input":"/x","sta')                # a crash inside a write
    assert main(argv + ["--resume"]) == 0
    assert [r["kind"] for r in _lines(out)][-2:] == ["run", "end"]


# -- a manifest that is not this job's ----------------------------------------------------------

def test_a_manifest_folder_or_foreign_lines_are_named_with_what_to_do(tmp_path, capsys):
    d, out, argv = _job(tmp_path, 2)
    (out / MANIFEST_NAME).mkdir(parents=True)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder" in err[0] and MANIFEST_NAME in err[0] and "internal" not in err[0], err
    (out / MANIFEST_NAME).rmdir()
    assert main(argv) == 0
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    other = json.loads(lines[0])
    other.update(run="0123456789ab", settings=5)                       # another job's run line, damaged
    stranger = {"kind": "image", "input": "/elsewhere.png", "status": "ok", "run": "feedfacecafe"}
    for bad, needle in ((json.dumps(other), "line 2: a run record whose 'settings' is not a dict"),
                        ("garbage", "line 2: not JSON"),
                        (json.dumps(stranger), "line 2: an image record of run 'feedfacecafe'")):
        (out / MANIFEST_NAME).write_text("\n".join(lines[:1] + [bad] + lines[1:]) + "\n")
        assert main(argv + ["--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and str(out / MANIFEST_NAME) in err[0], err
        assert "--fresh" in err[0] and "internal" not in err[0]
    assert main(argv + ["--fresh"]) == 0                               # starts the job over
    assert [r["kind"] for r in _lines(out)] == ["run", "image", "image", "end"]


# -- a rerun without --resume -------------------------------------------------------------------

def test_a_rerun_without_resume_is_refused_saying_what_is_there(tmp_path, capsys):
    d, out, argv = _job(tmp_path, 2)
    assert main(argv) == 0
    (out / "c1.png").unlink()                                          # one of the two is gone
    before = (out / "c0.png").stat().st_mtime_ns, (out / MANIFEST_NAME).read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 2 images done; --resume to continue, --fresh to start over" in err[0], err
    assert ((out / "c0.png").stat().st_mtime_ns, (out / MANIFEST_NAME).read_bytes()) == before
    assert main(argv + ["--resume", "--fresh"]) == 2
    assert main(argv + ["--fresh"]) == 0
    assert [r["kind"] for r in _lines(out)] == ["run", "image", "image", "end"]   # started over
    assert (out / "c0.png").stat().st_mtime_ns != before[0]
    from stylegrad.cli.main import build_parser
    assert "--fresh" in build_parser()._subparsers._group_actions[0].choices["stylize"].format_help()


# -- job status of a killed run -----------------------------------------------------------------

def test_job_status_tells_a_killed_run_and_how_to_resume_it(tmp_path, capsys, monkeypatch):
    d, out, argv = _job(tmp_path, 3)
    assert main(argv) == 0
    capsys.readouterr()
    recs = (out / MANIFEST_NAME).read_text().splitlines()
    (out / MANIFEST_NAME).write_text("\n".join(recs[:2]) + "\n")       # killed (SIGKILL) after one image
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["job", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "running now" not in text and "left" not in text, text
    line = [l for l in text.splitlines() if "interrupted" in l]
    assert len(line) == 1 and "interrupted at 1/3 - resume with: " in line[0], text
    cmd = line[0].split("resume with: ", 1)[1]
    assert cmd.startswith("cd ") and cmd.endswith(" --resume") and "stylegrad stylize " in cmd
    args = shlex.split(cmd)
    if args[0] == "cd":                                               # cd DIR && stylegrad ...
        monkeypatch.chdir(args[1])
        args = args[3:]
    assert args[0] == "stylegrad" and main(args[1:]) == 0             # the printed command finishes it
    assert main(["job", "status", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["done"] == 3 and not st["interrupted"] and st["resume_command"] is None


def test_job_status_of_a_running_job_gives_rate_only_from_measured_images(tmp_path, capsys):
    d, out, argv = _job(tmp_path, 2)
    assert main(argv) == 0
    capsys.readouterr()
    with ManifestWriter(out) as m:                                     # a driver holds the folder
        m.append({"kind": "run", "run": "r2", "settings": {}, "inputs": [str(d / "c0.png"), str(d / "c1.png")],
                  "outputs": ["c0.png", "c1.png"], "started": 1000.0, "pid": 4242, "config_hash": "h"})
        assert main(["job", "status", str(out)]) == 0
        text = capsys.readouterr().out
        assert "(running now, pid 4242)" in text and "left" not in text and "interrupted" not in text, text
        m.append({"kind": "image", "run": "r2", "input": str(d / "c0.png"), "status": "ok", "config_hash": "h",
                  "output": "c0.png", "finished": 1036.0})
        assert main(["job", "status", str(out)]) == 0
        text = capsys.readouterr().out
        assert "about 36s left at 100.0 images/hour" in text, text


REFERENCE_FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5"]

def test_job_status_warns_of_unreadable_manifest_lines(tmp_path, capsys):
    c = tmp_path / "in" / "c.png"
    c.parent.mkdir()
    write_image(c, 10, 10, 1)
    s = write_image(tmp_path / "s.png", 10, 10, 3)
    out = tmp_path / "out"
    assert main(["stylize", str(c), "--style", str(s), "--out-dir", str(out), "--size", "10", "--iters", "2",
                 "--quiet"] + REFERENCE_FAST) == 0
    capsys.readouterr()
    manifest = out / "stylegrad-job.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:1] + ["{torn"] + lines[1:]) + "\n")
    assert main(["job", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 of 1 done" in text and "warning: 1 unreadable manifest line(s) skipped (line 2)" in text
