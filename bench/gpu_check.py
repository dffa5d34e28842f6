"""The GPU check, in short named steps for a lent H100/H200 (not yet run on a GPU).

GPU time comes as commands of at most 10 minutes, about 25 minutes in all. Each step is one
command, sized to end within 8 minutes (subprocesses are killed at STEP_BUDGET_S; in-process
steps stop growing their sizes when the budget runs low), writes OUT/<step>.json atomically as
soon as it ends, and is guarded: an exception (allocation failures included, whether they
surface as torch.cuda.OutOfMemoryError or as a RuntimeError such as "out of memory" or
CUBLAS_STATUS_ALLOC_FAILED) is recorded in that step's JSON and the next step still runs.

    pip install --no-deps --no-build-isolation -q -e .
    python bench/gpu_check.py --list
    python bench/gpu_check.py --step tests    --out "$OUT"
    python bench/gpu_check.py --step kernels  --out "$OUT"
    python bench/gpu_check.py --step backends --out "$OUT"
    python bench/gpu_check.py --step bar      --out "$OUT"
    python bench/gpu_check.py --step lbfgs    --out "$OUT"
    python bench/gpu_check.py --step memory   --out "$OUT"

(``--step tests,kernels`` runs several in one command; ``--step all`` all of them, which
needs more than one 10-minute command.) Before any CUDA graph capture the work is warmed up on
a side stream, as PyTorch documents.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
STEP_BUDGET_S = 450  # 7.5 minutes: each step ends inside an 8-minute slot
OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
               "CUDA_ERROR_OUT_OF_MEMORY", "cudaErrorMemoryAllocation")


def is_oom(exc: BaseException) -> bool:
    """An allocation failure, however the library reported it."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, (RuntimeError, MemoryError)) and any(m in str(exc) for m in OOM_MARKERS)


def sh(cmd: List[str], log: Path, timeout: int) -> dict:
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    tail = log.read_text(errors="replace").splitlines()[-15:]
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.time() - t0, 1), "log": str(log), "tail": tail}


# ------------------------------------------------------------------------------------ steps
def step_tests(out: Path, deadline: float) -> dict:
    """pytest -m gpu: kernels vs float64 references, reproducibility, graph capture, bf16 bar."""
    return sh([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"], out / "tests.log",
              int(deadline - time.time()))


def step_kernels(out: Path, deadline: float) -> dict:
    """bench/kernels/bench_kernels.py: accuracy of every variant, then timings vs torch."""
    return sh([sys.executable, "bench/kernels/bench_kernels.py", "--repeats", "20", "--out",
               str(out / "kernels-bench.json")], out / "kernels.log", int(deadline - time.time()))


def step_backends(out: Path, deadline: float) -> dict:
    """stylegrad bench: reference vs torch vs cuda, fp32 and bf16, 256/512 px, batch 1 and 4."""
    return sh(["stylegrad", "bench", "--device", "cuda", "--backends", "reference,torch,cuda", "--precision",
               "fp32,bf16", "--size", "256,512", "--batch", "1,4", "--iters", "10", "--repeat", "3",
               "--out-dir", str(out / "backends")], out / "backends.log", int(deadline - time.time()))


def _images():
    from stylegrad.io.images import load_image

    shared = REPO.parent / "shared" / "images"
    if shared.exists():
        return load_image(shared / "content" / "tubingen.jpg"), load_image(shared / "style" / "starry_night.jpg")
    return load_image(REPO / "engine/examples/content.png"), load_image(REPO / "engine/examples/style.png")


def step_bar(out: Path, deadline: float, size: int = 512, iters: int = 500) -> dict:
    """The bf16 quality bar: bf16's final loss within 2% of fp32's, both scored by the fp32
    objective, 500 iterations at 512^2 of the cuda backend (graph-replayed)."""
    import torch

    from stylegrad import StyleConfig, Stylizer

    c, s = _images()
    res, score = {}, None
    for prec in ("fp32", "bf16"):
        st = Stylizer(StyleConfig(weights="random", backend="cuda", device="cuda", precision=prec, size=size,
                                  iters=iters))
        st.set_styles([s])
        x, t = st.prepare(c)
        t0 = time.time()
        final = st.backend.optimize(st.initial_image(x), t)
        torch.cuda.synchronize()
        if score is None:
            score = lambda img, b=st.backend, t=t: float(b.evaluate(img, t).total.sum())  # noqa: E731
        res[prec] = {"loss_fp32_objective": score(final), "seconds": round(time.time() - t0, 2),
                     "graph": st.backend.graph_status, "finite": bool(torch.isfinite(final).all())}
    res["bf16_rel_diff"] = (abs(res["bf16"]["loss_fp32_objective"] - res["fp32"]["loss_fp32_objective"])
                            / res["fp32"]["loss_fp32_objective"])
    res["ok"] = res["bf16_rel_diff"] <= 0.02
    return res


def step_lbfgs(out: Path, deadline: float, size: int = 512, history: int = 100) -> dict:
    """ms per L-BFGS step (stylegrad.optim) at 512^2, history 100, eager and replayed, both directions."""
    import statistics

    import torch

    from stylegrad.optim import LBFGS

    res = {}
    for direction in ("two_loop", "compact"):
        x = torch.randn(1, 3, size, size, device="cuda")
        opt = LBFGS(x, history=history, per_image=True, direction=direction)
        grads = [torch.randn_like(x) for _ in range(history + 5)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream before the capture
            for g in grads:            # fills the history (the ring wraps)
                opt.step(g)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        g = grads[0]

        def timed(fn, reps=30):
            ts = []
            for _ in range(reps):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                fn()
                e1.record()
                e1.synchronize()
                ts.append(e0.elapsed_time(e1))
            return statistics.median(ts)

        eager = timed(lambda: opt.step(g))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            opt.step(g)
        res[direction] = {"eager_ms": eager, "graph_ms": timed(graph.replay)}
    return res


def step_memory(out: Path, deadline: float,
                sizes=((1024, 1024), (2048, 2048), (2160, 3840), (3072, 4096))) -> dict:
    """The largest image that fits: 3 iterations of the cuda backend in bf16 at growing sizes,
    peak memory per pixel; stops at the first allocation failure or when time runs low."""
    import torch

    from stylegrad import StyleConfig, Stylizer

    rows = []
    for h, w in sizes:
        if time.time() > deadline - 120:
            rows.append({"h": h, "w": w, "ok": None, "error": "skipped: step time budget"})
            break
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            st = Stylizer(StyleConfig(weights="random", backend="cuda", device="cuda", precision="bf16",
                                      size=max(h, w), iters=3))
            st.set_styles([torch.rand(3, 512, 512)])
            st.run(torch.rand(3, h, w))
            peak = torch.cuda.max_memory_allocated()
            rows.append({"h": h, "w": w, "ok": True, "peak_gb": peak / 2**30, "bytes_per_pixel": peak / (h * w)})
            del st
        except Exception as exc:  # noqa: BLE001 -- only allocation failures end the scan quietly
            if not is_oom(exc):
                raise
            rows.append({"h": h, "w": w, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            break
    return {"sizes": rows}


STEPS: Dict[str, Tuple[Callable[[Path, float], dict], str]] = {
    "tests": (step_tests, "pytest -m gpu (kernels vs float64, reproducibility, capture, bf16 bar at 128 px)"),
    "kernels": (step_kernels, "bench/kernels: every variant's accuracy, then timings vs torch/cuBLAS"),
    "backends": (step_backends, "stylegrad bench: reference/torch/cuda x fp32/bf16 x 256,512 px x batch 1,4"),
    "bar": (step_bar, "quality bar: 500 iterations at 512^2, bf16 loss within 2% of fp32"),
    "lbfgs": (step_lbfgs, "capturable L-BFGS step time, eager vs graph, two_loop vs compact"),
    "memory": (step_memory, "largest image that fits, bf16, peak bytes per pixel"),
}


def run_step(name: str, out: Path) -> dict:
    """Run one step, guarded; write OUT/<name>.json when it ends (even on error)."""
    from stylegrad.io.fileio import write_json_atomic

    fn, what = STEPS[name]
    t0 = time.time()
    record = {"step": name, "what": what, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        import torch

        record["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        record["result"] = fn(out, t0 + STEP_BUDGET_S)
        rc = record["result"].get("rc", 0) if isinstance(record["result"], dict) else 0
        record["ok"] = rc == 0 and record["result"].get("ok", True) is not False
    except Exception as exc:  # noqa: BLE001 -- recorded; the next step still runs
        record.update(ok=False, oom=is_oom(exc), error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc().splitlines()[-12:])
    record["seconds"] = round(time.time() - t0, 1)
    write_json_atomic(out / f"{name}.json", record)
    return record


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", default=None, help=f"one or more of {', '.join(STEPS)} (comma separated), or all")
    ap.add_argument("--list", action="store_true", help="list the steps and exit")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"), help="folder for the JSON and logs")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.list or not a.step:
        for name, (_, what) in STEPS.items():
            print(f"{name:<9} {what}")
        return 0 if a.list else 2
    names = list(STEPS) if a.step == "all" else [s.strip() for s in a.step.split(",") if s.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        print(f"gpu_check: unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ok = True
    for name in names:
        rec = run_step(name, out)
        ok &= bool(rec.get("ok"))
        print(f"{name:<9} {'ok' if rec.get('ok') else 'FAILED'} {rec['seconds']:7.1f}s -> {out / (name + '.json')}"
              + (f"  ({rec['error']})" if "error" in rec else ""), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
