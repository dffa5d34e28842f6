"""``stylegrad bench``: every backend on the same inputs in one process, against ``reference``.

Method: for each backend, build it and its targets, run ``warmup`` iterations (excluded), then
``repeat`` timed runs of ``iters`` L-BFGS iterations each; ms/iteration is the median over the
repeats (``ms_min`` the fastest). CUDA is synchronised before reading the clock. Per-phase times
come from one further run with the phase timer on (it synchronises CUDA around every phase, so
it is kept out of the headline numbers). ``peak_mem_mb``: on CUDA, torch's peak allocation during
the backend's runs; on CPU, the process's peak resident set so far (a high-water mark of the
whole process: backends run in the order given, reference first).
"""
from __future__ import annotations

import datetime as _dt
import resource
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from stylegrad import terms
from stylegrad.backends.base import PhaseTimer
from stylegrad.backends.registry import resolve_backend
from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError
from stylegrad.io import images as imgs
from stylegrad.model.weights import load_vgg
from stylegrad.run.optimize import optimize
from stylegrad.run.stylizer import Stylizer, parse_device
from stylegrad.terms.flops import iteration_cost

EXAMPLES = Path(__file__).parent.parent / "examples"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, cwd=Path(__file__).resolve().parent.parent, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def bench_one(backend_name: str, precision: str, content: torch.Tensor, style: torch.Tensor, vgg, size: int,
              batch: int, iters: int, repeat: int, warmup: int, device: torch.device) -> dict:
    # print_every > iters: the loop reports only iteration 0 and the final one, so the CUDA
    # backend synchronises once per run, not per iteration. Each repeat includes the CUDA
    # backend's eager warm-up iterations and its graph capture (a bias against it).
    cfg = StyleConfig(size=size, iters=iters, weights="random", device=str(device), backend=backend_name,
                      precision=precision, print_every=iters + 1)
    st = Stylizer(cfg, vgg=vgg)
    cfg = st.config   # resolved: the weights' convention and its default style weight filled in
    try:
        st.set_styles([style])
        x_content, targets = st.prepare(content[None].expand(batch, -1, -1, -1).contiguous())
        x0 = st.initial_image(x_content)
        backend = st.backend
        evaluate = lambda img: backend.evaluate(img, targets)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Headline numbers: the backend's own loop (the CUDA backend replays a CUDA graph).
        if warmup > 0:
            backend.config = replace(cfg, iters=warmup)
            backend.optimize(x0, targets)
            backend.config = cfg
        _sync(device)
        times, final = [], None
        for _ in range(repeat):
            losses: List[float] = []
            t0 = time.perf_counter()
            backend.optimize(x0, targets, report=lambda k, ev, ms, _x: losses.append(float(ev.total.sum()))
                             if k == iters else None)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3 / (iters + 1))  # iters steps + final evaluation
            final = losses[-1]
        graph = getattr(backend, "graph_status", None)
        # Phases: one eager run with the phase timer (it synchronises around every phase, which
        # a CUDA graph cannot contain), so phase times are eager times.
        backend.timer = PhaseTimer(enabled=True, device=device)
        t0 = time.perf_counter()
        optimize(x0, evaluate, cfg)
        _sync(device)
        wall = (time.perf_counter() - t0) * 1e3 / (iters + 1)
        phases = {k: v / (iters + 1) for k, v in backend.timer.totals.items()}
        phases["optimizer_and_overhead"] = max(0.0, wall - sum(phases.values()))
        backend.timer = PhaseTimer()
        return {
            "backend": backend.name, "precision": precision, "ms_per_iter": statistics.median(times),
            "ms_min": min(times), "final_loss": final, "phases_ms": phases, "peak_mem_mb": _peak_mb(device),
            **({"graph": graph} if graph is not None else {}),
        }
    finally:
        st.close()


def run_bench(backends: Sequence[str], size: int, batch: int, iters: int, repeat: int, warmup: int,
              device: str = "cpu", precisions: Sequence[str] = ("fp32",), content: Optional[str] = None,
              style: Optional[str] = None, weights: str = "random", model: str = "vgg19",
              command: str = "") -> dict:
    if iters < 1 or repeat < 1 or size < 1 or batch < 1:
        raise ConfigError("bench needs --iters, --repeat, --size and --batch >= 1")
    dev = parse_device(device)
    # Benchmarks run square images (size x size): the content is centre-cropped to a square.
    c = square(imgs.load_image(content) if content else imgs.load_image(EXAMPLES / "content.png"), size)
    s = imgs.load_image(style) if style else imgs.load_image(EXAMPLES / "style.png")
    vgg = load_vgg(weights, model, "avg")
    order = ["reference"] + [b for b in backends if b != "reference"]
    results = []
    for name in order:
        for prec in precisions:
            try:
                resolve_backend(name, dev, prec)
            except ConfigError:      # this precision is not run here (not an unavailable backend)
                continue
            results.append(bench_one(name, prec, c, s, vgg, size, batch, iters, repeat, warmup, dev))
    ref = results[0]
    h, w = c.shape[-2:]
    cfg = StyleConfig()
    cost = iteration_cost(model, cfg.content_layers, cfg.style_layers, h, w, batch, terms=terms.build(cfg))
    peak = measured_matmul_tflops(dev) if dev.type == "cuda" else None
    for r in results:
        r["loss_rel_diff_vs_reference"] = abs(r["final_loss"] - ref["final_loss"]) / max(abs(ref["final_loss"]), 1e-30)
        r["speedup_vs_reference"] = ref["ms_per_iter"] / r["ms_per_iter"]
        r["iters_per_s"] = 1e3 / r["ms_per_iter"]
        r["images_per_hour_500_iters"] = 3600e3 / (r["ms_per_iter"] * 500) * batch
        r["tflops_achieved"] = cost["total_flops"] / (r["ms_per_iter"] * 1e-3) / 1e12
        if peak is not None:
            r["fraction_of_measured_bf16_matmul"] = r["tflops_achieved"] / peak
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return {
        "device": dev_name, "size": size, "batch": batch, "iters": iters, "repeat": repeat, "warmup": warmup,
        "weights": weights, "model": model, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": command, "commit": git_commit(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "height": h, "width": w, "flops_per_iter": cost["total_flops"], "flops_counted": cost,
        "measured_bf16_matmul_tflops": peak,
        "results": results,
    }


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return imgs.resize(image[:, top:top + side, left:left + side].contiguous(), size, size)


def measured_matmul_tflops(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    """The device's bf16 matrix-product rate, measured now (CUDA events, median of ``reps``)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        a @ b
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return 2.0 * n ** 3 / (statistics.median(times) * 1e-3) / 1e12


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return "cpu"


def format_table(report: dict) -> str:
    phases = ["forward", "losses", "backward", "optimizer_and_overhead"]
    head = (f"{'backend':12s} {'prec':5s} {'ms/iter':>9s} {'min':>9s} {'speedup':>8s} {'loss rel diff':>13s} "
            f"{'peak MB':>8s}  " + " ".join(f"{p[:9]:>9s}" for p in phases))
    lines = [f"device {report['device']}, {report['width']}x{report['height']}, batch {report['batch']}, "
             f"iters {report['iters']} x {report['repeat']} repeats, commit {report['commit']}, "
             f"{report['flops_per_iter'] / 1e9:.1f} GFLOP/iter (counted)", head]
    for r in report["results"]:
        lines.append(f"{r['backend']:12s} {r['precision']:5s} {r['ms_per_iter']:9.2f} {r['ms_min']:9.2f} "
                     f"{r['speedup_vs_reference']:7.2f}x {r['loss_rel_diff_vs_reference']:13.2e} {r['peak_mem_mb']:8.0f}  "
                     + " ".join(f"{r['phases_ms'].get(p, 0.0):9.2f}" for p in phases))
    for r in report["results"]:
        frac = r.get("fraction_of_measured_bf16_matmul")
        lines.append(f"  {r['backend']}/{r['precision']}: {r['iters_per_s']:.1f} it/s, "
                     f"{r['images_per_hour_500_iters']:.1f} images/h at 500 iters, {r['tflops_achieved']:.3f} TFLOP/s"
                     + (f" = {100 * frac:.1f}% of measured bf16 matmul ({report['measured_bf16_matmul_tflops']:.0f} TFLOP/s)"
                        if frac is not None else ""))
    return "\n".join(lines)
