"""bench/gpu_check.py without a GPU: its steps are listed, guarded and each writes its own JSON.
(The steps' GPU work itself is not verified: no session so far had a GPU.)"""
import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_list_shows_the_steps(capsys):
    gc = _load()
    assert gc.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["tests", "kernels", "backends", "bar", "lbfgs", "memory"]


def test_each_step_is_guarded_and_writes_its_json_when_it_ends(tmp_path, monkeypatch, capsys):
    gc = _load()
    order = []

    def boom(out, deadline):
        order.append("boom")
        raise ValueError("a bug in this step")

    def oom(out, deadline):
        order.append("oom")
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)")

    def fine(out, deadline):
        order.append("fine")
        assert json.loads((out / "boom.json").read_text())["ok"] is False  # written before the next step
        return {"value": 3}

    monkeypatch.setattr(gc, "STEPS", {"boom": (boom, "raises"), "oom": (oom, "oom"), "fine": (fine, "works")})
    assert gc.main(["--step", "boom,oom,fine", "--out", str(tmp_path)]) == 1
    assert order == ["boom", "oom", "fine"]
    b, o, f = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("boom", "oom", "fine"))
    assert b["ok"] is False and b["error"] == "ValueError: a bug in this step" and b["oom"] is False
    assert o["ok"] is False and o["oom"] is True
    assert f["ok"] is True and f["result"] == {"value": 3}
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize("exc,want", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),
])
def test_allocation_failures_are_recognised_whatever_their_type(exc, want):
    assert _load().is_oom(exc) is want


def test_unknown_step_is_a_usage_error(tmp_path, capsys):
    assert _load().main(["--step", "tests,nope", "--out", str(tmp_path)]) == 2
    assert "unknown step(s) nope" in capsys.readouterr().err
