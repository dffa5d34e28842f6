#!/usr/bin/env python
"""Benchmark stylegrad's CUDA kernels against their PyTorch / cuBLAS equivalents.

On a CUDA GPU this script (1) checks every kernel variant against its float64
reference (error <= 2x that of the plain torch expression, as in
tests/kernels), (2) measures the device's practical peaks in the same run (a
large device-to-device copy for bandwidth, large fp32 and bf16 matmuls for
FLOP/s), then (3) times each kernel and its torch equivalent on the VGG19
layer shapes of a 512x512 image with CUDA events: warm-up, then the median of
--repeats runs. It prints a table and writes JSON to --out.

Counting conventions (by hand, below):
  * gram: FLOPs = 2*B*C*C*M for both our kernel and torch.bmm, i.e. the full
    GEMM's work. Our kernel executes about half of it (upper-triangle tiles),
    so its "effective" TFLOP/s can exceed the matmul peak; speedup is the
    plain time ratio.
  * memory-bound kernels: bytes = every tensor element read once + every
    element written once (a broadcast operand counted once), at its dtype.
  * % peak: against the measured copy bandwidth (bytes read + written per
    second) or the measured matmul TFLOP/s of the same dtype (fp16 uses bf16's).

Targets (H100): gram >= 1.3x torch.bmm at relu1_1..relu4_1; fused losses
>= 70% of measured copy bandwidth. Usage: python bench/kernels/bench_kernels.py
[--batch 1] [--repeats 50] [--out PATH].
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

LAYERS = {  # VGG19 relu*_1 at a 512x512 input: (C, M = H*W)
    "relu1_1": (64, 262144),
    "relu2_1": (128, 65536),
    "relu3_1": (256, 16384),
    "relu4_1": (512, 4096),
    "relu5_1": (512, 1024),
}
GRAM_TARGET_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
GRAM_TARGET_SPEEDUP = 1.3
BANDWIDTH_TARGET = 0.70
REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1, help="batch size B (default 1)")
    ap.add_argument("--repeats", type=int, default=50, help="timed runs per measurement; the median is reported")
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs before timing")
    ap.add_argument("--dtypes", default="float32,bfloat16,float16", help="feature dtypes, comma separated")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output path (default bench/results/kernels-<device>-<date>.json)")
    return ap.parse_args(argv)


def timed_ms(fn, warmup: int, repeats: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_peaks(args) -> dict:
    import torch

    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    ms = timed_ms(lambda: dst.copy_(src), 3, max(5, args.repeats // 5))
    peaks = {"copy_GBps": 2 * src.numel() * 4 / ms / 1e6}
    del src, dst
    n = 8192
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(n, n, device="cuda").to(dtype)
        b = torch.randn(n, n, device="cuda").to(dtype)
        ms = timed_ms(lambda: a @ b, 3, max(5, args.repeats // 5))
        peaks[f"matmul_{str(dtype).removeprefix('torch.')}_TFLOPs"] = 2 * n**3 / ms / 1e9
    peaks["matmul_float16_TFLOPs"] = peaks["matmul_bfloat16_TFLOPs"]
    return peaks


def max_err(x, ref) -> float:
    return (x.double() - ref.double()).abs().max().item()


def accuracy_checks(dtypes) -> list[dict]:
    """Every registered variant against the float64 reference, at relu4_1."""
    import torch

    import stylegrad.kernels as K
    from stylegrad.kernels import cuda_ops, registry

    out = []
    C, M = LAYERS["relu4_1"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dtype in dtypes:
        F = torch.randn(2, C, M, device="cuda", generator=gen).to(dtype)
        ref = K.gram_reference(F)
        plain = max_err(torch.bmm(F, F.transpose(1, 2)), ref)
        floor = 4 * 2.0**-24 * ref.abs().max().item()
        for variant in sorted(registry.VARIANTS["gram"]):
            err = max_err(cuda_ops.gram(F, variant=variant), ref)
            out.append({"kernel": f"gram[{variant}]", "dtype": str(dtype).removeprefix("torch."),
                        "max_err": err, "torch_max_err": plain, "ok": err <= 2 * plain + floor})
    return out


def _row(kernel, layer, dtype, ms, torch_ms, work, unit, peak):
    # work is FLOPs (unit TFLOP/s) or bytes (unit GB/s); ms is milliseconds.
    rate = work / ms / 1e9 if unit == "TFLOP/s" else work / ms / 1e6
    return {"kernel": kernel, "layer": layer, "dtype": dtype, "ms": ms, "torch_ms": torch_ms,
            "speedup": torch_ms / ms if torch_ms else None, "rate": rate, "unit": unit,
            "pct_peak": 100 * rate / peak}


def bench_all(args, peaks) -> list[dict]:
    import torch

    import stylegrad.kernels as K
    from stylegrad.kernels import cuda_ops, registry

    B, rows = args.batch, []
    t = lambda fn: timed_ms(fn, args.warmup, args.repeats)  # noqa: E731
    bw = peaks["copy_GBps"]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    for name, (C, M) in LAYERS.items():
        for dtype in dtypes:
            dn, size = str(dtype).removeprefix("torch."), torch.finfo(dtype).bits // 8
            F = torch.randn(B, C, M, device="cuda").to(dtype)
            P = torch.randn(1, C, M, device="cuda").to(dtype)
            torch_ms = t(lambda: torch.bmm(F, F.transpose(1, 2)))
            for variant in sorted(registry.VARIANTS["gram"]):
                if variant == "naive" and M > 16384:
                    continue  # one thread per output, seconds per call at the big layers
                ms = t(lambda: cuda_ops.gram(F, variant=variant))
                rows.append(_row(f"gram[{variant}]", name, dn, ms, torch_ms, 2 * B * C * C * M, "TFLOP/s",
                                 peaks[f"matmul_{dn}_TFLOPs"]))
            torch_ms = t(lambda: K.content_loss(F, P) if dtype == torch.float32 else
                         (0.5 * (F - P).float().square().flatten(1).sum(1), F - P))
            ms = t(lambda: cuda_ops.content_loss(F, P))
            rows.append(_row("content_loss", name, dn, ms, torch_ms, (2 * B + 1) * C * M * size, "GB/s", bw))
            act = torch.randn(B, C, M, device="cuda").to(dtype)
            torch_ms = t(lambda: (F + F) * (act > 0))
            ms = t(lambda: cuda_ops.relu_backward_accumulate(F, F, act))
            rows.append(_row("relu_backward_accumulate", name, dn, ms, torch_ms, 4 * B * C * M * size, "GB/s", bw))
            del F, P, act
        G = torch.randn(B, C, C, device="cuda")
        A = torch.randn(1, C, C, device="cuda")
        torch_ms = t(lambda: K.style_loss(G, A, 1.0, 1.0))
        ms = t(lambda: cuda_ops.style_loss(G, A, 1.0, 1.0))
        rows.append(_row("style_loss", name, "float32", ms, torch_ms, (2 * B + 1) * C * C * 4, "GB/s", bw))

    x = torch.rand(B, 3, 512, 512, device="cuda")
    n = x.numel()
    rows.append(_row("tv_loss", "image", "float32", t(lambda: cuda_ops.tv_loss(x)), t(lambda: K.tv_loss(x)),
                     2 * n * 4, "GB/s", bw))
    mean, std = torch.rand(3, device="cuda"), torch.rand(3, device="cuda") + 0.5
    rows.append(_row("normalize", "image", "float32", t(lambda: cuda_ops.normalize(x, mean, std)),
                     t(lambda: K.normalize(x, mean, std)), 2 * n * 4, "GB/s", bw))
    rows.append(_row("clamp_", "image", "float32", t(lambda: cuda_ops.clamp_(x)), t(lambda: K.clamp_(x)),
                     2 * n * 4, "GB/s", bw))
    p, g, m, v = (torch.rand(n, device="cuda") for _ in range(4))
    step, lr = torch.tensor(5.0, device="cuda"), torch.tensor(1e-3, device="cuda")
    rows.append(_row("adam_step_", "image", "float32",
                     t(lambda: cuda_ops.adam_step_(p, g, m, v, step, lr, 0.9, 0.999, 1e-8)),
                     t(lambda: K.adam_step_(p, g, m, v, step, lr, 0.9, 0.999, 1e-8)), 7 * n * 4, "GB/s", bw))
    V = torch.randn(10, n, device="cuda")
    rows.append(_row("lbfgs_dots", "K=10", "float32", t(lambda: cuda_ops.lbfgs_dots(V, g)), t(lambda: V @ g),
                     11 * n * 4, "GB/s", bw))
    alpha = torch.tensor(0.5, device="cuda")
    rows.append(_row("lbfgs_axpy_", "image", "float32", t(lambda: cuda_ops.lbfgs_axpy_(p, alpha, g)),
                     t(lambda: p.addcmul_(g, alpha)), 3 * n * 4, "GB/s", bw))
    return rows


def targets(rows) -> dict:
    gram = [r for r in rows if r["kernel"] == "gram[tiled]" and r["layer"] in GRAM_TARGET_LAYERS]
    losses = [r for r in rows if r["kernel"] in ("content_loss", "style_loss", "tv_loss")]
    return {
        "gram_speedup_ge_1.3_at_relu1-4": all(r["speedup"] >= GRAM_TARGET_SPEEDUP for r in gram),
        "fused_losses_ge_70pct_bandwidth": all(r["pct_peak"] >= 100 * BANDWIDTH_TARGET for r in losses),
    }


def format_table(rows) -> str:
    head = f"{'kernel':<26}{'layer':<9}{'dtype':<10}{'ms':>9}{'torch ms':>10}{'speedup':>9}{'rate':>10} {'unit':<8}{'%peak':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(f"{r['kernel']:<26}{r['layer']:<9}{r['dtype']:<10}{r['ms']:>9.4f}{r['torch_ms']:>10.4f}"
                     f"{sp:>9}{r['rate']:>10.1f} {r['unit']:<8}{r['pct_peak']:>6.1f}")
    return "\n".join(lines)


def git_commit() -> str:
    try:  # read-only query
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA device (torch.cuda.is_available() is False); nothing to benchmark.",
              file=sys.stderr)
        return 2
    try:
        import stylegrad.kernels  # noqa: F401
    except ImportError as exc:
        print(f"bench_kernels: cannot import stylegrad.kernels ({exc}); run `pip install -e .[cuda]`.",
              file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name()
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    checks = accuracy_checks(dtypes)
    peaks = measure_peaks(args)
    rows = bench_all(args, peaks)
    now = dt.datetime.now(dt.timezone.utc)
    result = {"device": device, "command": " ".join([sys.executable] + sys.argv), "commit": git_commit(),
              "date": now.isoformat(timespec="seconds"), "torch": torch.__version__, "batch": args.batch,
              "repeats": args.repeats, "peaks": peaks, "accuracy": checks, "results": rows,
              "targets": targets(rows)}
    print(f"device: {device}   copy {peaks['copy_GBps']:.0f} GB/s   matmul fp32 "
          f"{peaks['matmul_float32_TFLOPs']:.1f} / bf16 {peaks['matmul_bfloat16_TFLOPs']:.1f} TFLOP/s")
    for c in checks:
        print(f"accuracy {c['kernel']:<14}{c['dtype']:<10} max err {c['max_err']:.3g} "
              f"(torch {c['torch_max_err']:.3g}) {'ok' if c['ok'] else 'FAIL'}")
    print(format_table(rows))
    for k, v in result["targets"].items():
        print(f"target {k}: {'met' if v else 'NOT met'}")
    out = args.out or REPO / "bench" / "results" / (
        f"kernels-{device.replace(' ', '_')}-{now.strftime('%Y%m%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
