"""One batched GPU session for a lent H100/H200: build, check parity, time, record.

Run on the device machine from the repository root (not verified yet: no session so far had a
GPU):

    pip install --no-deps --no-build-isolation -q -e . && python bench/gpu_check.py --out "$OUT"

Steps, each logged to OUT and summarised in OUT/gpu_check.json:
  1. the GPU tests (pytest -m gpu): kernels vs float64 references, graph capture, bf16 bar;
  2. the kernel benchmark (bench/kernels/bench_kernels.py);
  3. stylegrad bench, reference vs torch vs cuda, fp32 and bf16, sizes x batches;
  4. the bf16 quality bar: 500 iterations at 512^2, bf16 final loss within 2% of fp32
     (both scored by the fp32 objective);
  5. the largest image that fits: 3 iterations of the cuda backend in bf16 at growing sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def sh(cmd, log: Path, timeout: int) -> int:
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    print(f"{' '.join(cmd)[:90]:90s} rc={rc} {time.time() - t0:6.1f}s", flush=True)
    return rc


def quality(size: int, iters: int) -> dict:
    import torch
    from stylegrad import StyleConfig, Stylizer
    from stylegrad.images import load_image

    root = Path(__file__).resolve().parent.parent
    shared = root.parent / "shared" / "images"
    c = load_image(shared / "content" / "tubingen.jpg") if shared.exists() else load_image(root / "engine/examples/content.png")
    s = load_image(shared / "style" / "starry_night.jpg") if shared.exists() else load_image(root / "engine/examples/style.png")
    out, score = {}, None
    for prec in ("fp32", "bf16"):
        st = Stylizer(StyleConfig(weights="random", backend="cuda", device="cuda", precision=prec, size=size, iters=iters))
        st.set_styles([s])
        x, t = st.prepare(c)
        t0 = time.time()
        final = st.backend.optimize(st.initial_image(x), t)
        torch.cuda.synchronize()
        if score is None:
            score = lambda img, b=st.backend, t=t: float(b.evaluate(img, t).total.sum())
        out[prec] = {"loss_fp32_objective": score(final), "seconds": time.time() - t0,
                     "graph": st.backend.graph_status, "finite": bool(torch.isfinite(final).all())}
    out["bf16_rel_diff"] = abs(out["bf16"]["loss_fp32_objective"] - out["fp32"]["loss_fp32_objective"]) / out["fp32"]["loss_fp32_objective"]
    return out


def lbfgs_step_times(size: int = 512, history: int = 100) -> dict:
    """ms per CapturableLBFGS step, eager and replayed from a CUDA graph, both directions."""
    import statistics

    import torch
    from stylegrad.optim_capturable import CapturableLBFGS

    out = {}
    for direction in ("two_loop", "compact"):
        x = torch.randn(1, 3, size, size, device="cuda")
        opt = CapturableLBFGS(x, history=history, per_image=True, direction=direction)
        grads = [torch.randn_like(x) for _ in range(history + 5)]
        for g in grads:                       # fill the history (ring wraps)
            opt.step(g)
        g = grads[0]
        torch.cuda.synchronize()
        def timed(fn, reps=30):
            ts = []
            for _ in range(reps):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record(); fn(); e1.record(); e1.synchronize()
                ts.append(e0.elapsed_time(e1))
            return statistics.median(ts)
        eager = timed(lambda: opt.step(g))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            opt.step(g)
        out[direction] = {"eager_ms": eager, "graph_ms": timed(graph.replay)}
    return out


def largest(sizes) -> list:
    import torch
    from stylegrad import StyleConfig, Stylizer

    rows = []
    for h, w in sizes:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            st = Stylizer(StyleConfig(weights="random", backend="cuda", device="cuda", precision="bf16",
                                      size=max(h, w), iters=3))
            st.set_styles([torch.rand(3, 512, 512)])
            r = st.run(torch.rand(3, h, w))
            rows.append({"h": h, "w": w, "ok": True, "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
                         "bytes_per_pixel": torch.cuda.max_memory_allocated() / (h * w)})
            del st, r
        except torch.cuda.OutOfMemoryError:
            rows.append({"h": h, "w": w, "ok": False, "error": "out of memory"})
            break
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"))
    ap.add_argument("--quick", action="store_true", help="skip the 500-iteration quality run")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    import torch

    summary["device"] = torch.cuda.get_device_name(0)
    summary["tests_rc"] = sh([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"], out / "tests.log", 300)
    summary["kernels_rc"] = sh([sys.executable, "bench/kernels/bench_kernels.py", "--out", str(out / "kernels.json")],
                               out / "kernels.log", 300)
    summary["bench_rc"] = sh(["stylegrad", "bench", "--device", "cuda", "--backends", "reference,torch,cuda",
                              "--precision", "fp32,bf16", "--size", "256,512,1024", "--batch", "1,8", "--iters", "20",
                              "--repeat", "5", "--out-dir", str(out)], out / "bench.log", 600)
    summary["lbfgs_step_512_h100"] = lbfgs_step_times()
    if not a.quick:
        summary["quality_512_500"] = quality(512, 500)
    summary["largest"] = largest([(1024, 1024), (2048, 2048), (2160, 3840), (3072, 4096)])
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=1)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
