"""``stylegrad serve`` as a process: kill -9 and restart, SIGTERM, ``stylegrad submit``."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from PIL import Image  # noqa: E402

from stylegrad.service.client import Client  # noqa: E402

from .helpers import start_process, stop_process, write_png  # noqa: E402


def _rows(data):
    db = sqlite3.connect(str(data / "jobs.sqlite"))
    db.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM jobs")}
    finally:
        db.close()


def test_kill_9_then_restart_finishes_every_job_exactly_once(tmp_path):
    data = tmp_path / "data"
    c, s = write_png(tmp_path / "c.png", 1), write_png(tmp_path / "s.png", 2)
    proc = start_process(data, "--max-batch", "2")
    try:
        with Client(proc.url) as client:
            ids = [client.submit(c, s, size=32, iters=30 + 6 * k, seed=k).id for k in range(6)]
            # kill once the first job is done and others are running or queued
            deadline = time.monotonic() + 120
            while True:
                states = [client.get(i)["status"] for i in ids]
                if "done" in states and "running" in states:
                    break
                assert time.monotonic() < deadline, states
                time.sleep(0.05)
    finally:
        rc = stop_process(proc, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    before = _rows(data)
    assert {r["status"] for r in before.values()} >= {"done", "running"}
    done_before = {i: r["finished"] for i, r in before.items() if r["status"] == "done"}

    proc = start_process(data, "--max-batch", "2")
    try:
        assert "queued again" in _read_stderr_line(proc)
        with Client(proc.url) as client:
            finals = [client.wait(i, 180) for i in ids]
            assert [f["status"] for f in finals] == ["done"] * 6
            for i in ids:
                img = client.result(i)
                assert img.size == (32, 24)
    finally:
        assert stop_process(proc, signal.SIGTERM) == 0
    after = _rows(data)
    assert all(r["done_count"] == 1 for r in after.values())        # done exactly once
    for i, finished in done_before.items():                            # no done job redone
        assert after[i]["finished"] == finished and after[i]["attempts"] == before[i]["attempts"]
    assert any(after[i]["attempts"] == 2 for i in ids)                 # the killed ones ran again
    results = sorted(p.name for p in (data / "results").iterdir())
    assert results == sorted(f"{i}.png" for i in ids)                 # no temporary left, no torn file
    for p in (data / "results").iterdir():
        Image.open(p).load()


def _read_stderr_line(proc) -> str:
    return proc.stderr.readline()


def test_sigterm_checkpoints_running_job_and_exits_0(tmp_path):
    data = tmp_path / "data"
    c, s = write_png(tmp_path / "c.png", 1), write_png(tmp_path / "s.png", 2)
    proc = start_process(data)
    try:
        with Client(proc.url) as client:
            jid = client.submit(c, s, size=32, iters=1000).id
            while client.get(jid)["status"] != "running":
                time.sleep(0.05)
    finally:
        rc = stop_process(proc, signal.SIGTERM)
    assert rc == 0
    assert _rows(data)[jid]["status"] == "queued"     # checkpointed: back in the queue, not lost


def test_submit_command_end_to_end(tmp_path):
    data = tmp_path / "data"
    c, s = write_png(tmp_path / "c.png", 1), write_png(tmp_path / "s.png", 2)
    tokens = tmp_path / "tokens"
    tokens.write_text("ci:ci-token-0123456789abcdef\n")
    token_file = tmp_path / "my-token"
    token_file.write_text("ci-token-0123456789abcdef\n")
    proc = start_process(data, "--tokens", str(tokens))
    try:
        out = tmp_path / "out.jpg"
        cmd = [sys.executable, "-m", "stylegrad.cli.main", "submit", str(c), "--style", str(s), "-o", str(out),
               "--server", proc.url, "--token-file", str(token_file), "--size", "32", "--iters", "10",
               "--style-layers", "relu1_1:0.5,relu2_1:0.5"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "done, written to" in r.stderr
        assert Image.open(out).size == (32, 24)
        # a wrong token: one line, rc 2, no traceback
        token_file.write_text("not-the-token-0123456789\n")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "401 unauthorized" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        stop_process(proc, signal.SIGTERM)


def test_serve_refuses_network_without_tokens():
    r = subprocess.run([sys.executable, "-m", "stylegrad.cli.main", "serve", "--host", "0.0.0.0", "--weights", "random"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "without --tokens" in r.stderr and "Traceback" not in r.stderr
