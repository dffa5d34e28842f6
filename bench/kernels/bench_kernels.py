#!/usr/bin/env python
"""Benchmark stylegrad's CUDA kernels against their PyTorch / cuBLAS equivalents.

On a CUDA GPU this script (1) checks every kernel and development variant
(variants.py) against its float64 reference (error <= 2x that of the plain
torch expression, as in tests/kernels; the chain bound of variants.py for the
naive Gram and the atomics of lbfgs_dots), (2) measures the device's practical peaks in the same run (a
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

Without a GPU, ``--emulate`` runs step (1) only, on small shapes, in the CPU emulator
(stylegrad.kernels.emulator): the development variants stay checked on every CI run.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
import variants  # noqa: E402  (registers the development kernels with stylegrad's registry)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1, help="batch size B (default 1)")
    ap.add_argument("--repeats", type=int, default=50, help="timed runs per measurement; the median is reported")
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs before timing")
    ap.add_argument("--dtypes", default="float32,bfloat16,float16", help="feature dtypes, comma separated")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output path (default bench/results/kernels-<device>-<date>.json)")
    ap.add_argument("--emulate", action="store_true",
                    help="no GPU: check every variant in the CPU emulator on small shapes, time nothing")
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


def _check_row(kernel, dtype, err, allowed, **extra) -> dict:
    return {"kernel": kernel, "dtype": dtype, "max_err": err, "allowed": allowed, "ok": err <= allowed, **extra}


def accuracy_checks(dtypes, device="cuda", C=512, M=4096, n=3 * 513 * 97) -> list[dict]:
    """Every registered variant and development kernel against its float64 reference.

    Rules: the 2x rule (vs the plain torch expression, plus a floor of 4 float32 ulps of the
    result's scale) for deterministic kernels; the chain bound of variants.py for the naive
    Gram (one M-term chain) and lbfgs_dots (float atomics, no fixed order)."""
    import torch

    import stylegrad.kernels as K

    out = []
    gen = torch.Generator(device=device).manual_seed(0)
    dn = lambda d: str(d).removeprefix("torch.")  # noqa: E731

    from stylegrad.kernels.reference import allowed_error, chain_tolerance, max_error

    def rule(ours, plain, ref):
        return max_error(ours, ref), allowed_error(plain, ref)

    for dtype in dtypes:
        F = torch.randn(2, C, M, device=device, generator=gen).to(dtype)
        ref = K.gram_reference(F)
        plain = torch.bmm(F, F.transpose(1, 2))
        for variant, fn in sorted(variants.GRAM_VARIANTS.items()):
            G = fn(F)
            if variant == "naive":  # elementwise: |err| / chain bound <= 1
                Fd = F.double()
                tol = chain_tolerance(M, Fd.abs() @ Fd.abs().transpose(1, 2))
                out.append(_check_row(f"gram[{variant}] err/bound", dn(dtype),
                                      ((G.double() - ref).abs() / tol).max().item(), 1.0))
            else:
                out.append(_check_row(f"gram[{variant}]", dn(dtype), *rule(G, plain, ref)))
    x = torch.rand(2, 3, 97, 41, device=device, generator=gen) * 1.4 - 0.2
    mean, std = torch.rand(3, device=device, generator=gen), torch.rand(3, device=device, generator=gen) + 0.1
    out.append(_check_row("normalize", "float32", *rule(variants.normalize(x, mean, std), variants.normalize_torch(x, mean, std),
                                                        variants.normalize_reference(x, mean, std))))
    y = x.clone()
    y[0, 0, 0, :3] = torch.tensor([float("nan"), -float("inf"), float("inf")], device=device)
    want = variants.clamp_reference(y)
    variants.clamp_(y)
    same = bool(torch.equal(y.isnan(), want.isnan()) and torch.equal(y.double().nan_to_num(), want.nan_to_num()))
    out.append(_check_row("clamp_", "float32", 0.0 if same else float("inf"), 0.0))
    p, g = (torch.randn(n, device=device, generator=gen) for _ in range(2))
    m = torch.randn(n, device=device, generator=gen) * 0.1
    v = torch.rand(n, device=device, generator=gen) * 0.01
    args = (0.9, 0.999, 1e-8)
    ref = variants.adam_step_reference(p, g, m, v, 3, 0.01, *args)
    for on_device in (False, True):
        plain = [t.clone() for t in (p, m, v)]
        variants.adam_step_torch_(plain[0], g, plain[1], plain[2], 3, 0.01, *args)
        ours = [t.clone() for t in (p, m, v)]
        step = torch.tensor(3.0, device=device) if on_device else 3
        lr = torch.tensor(0.01, device=device) if on_device else 0.01
        variants.adam_step_(ours[0], g, ours[1], ours[2], step, lr, *args)
        worst = max((rule(o, pl, r) for o, pl, r in zip(ours, plain, ref)), key=lambda t: t[0] / t[1])
        out.append(_check_row("adam_step_" + ("[device step]" if on_device else "[host step]"), "float32", *worst))
    V = torch.randn(17, n, device=device, generator=gen)
    dots = variants.lbfgs_dots(V, g)
    tol = chain_tolerance(n, (V.double().abs() * g.double().abs()).sum(1))
    out.append(_check_row("lbfgs_dots err/bound", "float32",
                          ((dots.double() - variants.lbfgs_dots_reference(V, g)).abs() / tol).max().item(), 1.0))
    y = torch.randn(n, device=device, generator=gen)
    alpha = dots[16] / (n + 1)  # a 0-d view into device memory, never read on the host
    ref = variants.lbfgs_axpy_reference(y, alpha, g)
    plain = y + alpha * g
    variants.lbfgs_axpy_(y, alpha, g)
    out.append(_check_row("lbfgs_axpy_", "float32", *rule(y, plain, ref)))
    return out


def emulated_checks(dtypes) -> list[dict]:
    """accuracy_checks on the CPU emulator, at shapes it runs in seconds."""
    from stylegrad.kernels import emulator

    with emulator.session("forward"):
        return accuracy_checks(dtypes, device="cpu", C=100, M=1037, n=4099)


def _row(kernel, layer, dtype, ms, torch_ms, work, unit, peak):
    # work is FLOPs (unit TFLOP/s) or bytes (unit GB/s); ms is milliseconds.
    rate = work / ms / 1e9 if unit == "TFLOP/s" else work / ms / 1e6
    return {"kernel": kernel, "layer": layer, "dtype": dtype, "ms": ms, "torch_ms": torch_ms,
            "speedup": torch_ms / ms if torch_ms else None, "rate": rate, "unit": unit,
            "pct_peak": 100 * rate / peak}


def bench_all(args, peaks) -> list[dict]:
    import torch

    import stylegrad.kernels as K
    from stylegrad.kernels import cuda_ops

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
            for variant, fn in sorted(variants.GRAM_VARIANTS.items()):
                if variant == "naive" and M > 16384:
                    continue  # one thread per output, seconds per call at the big layers
                ms = t(lambda: fn(F))
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
    rows.append(_row("normalize", "image", "float32", t(lambda: variants.normalize(x, mean, std)),
                     t(lambda: variants.normalize_torch(x, mean, std)), 2 * n * 4, "GB/s", bw))
    rows.append(_row("clamp_", "image", "float32", t(lambda: variants.clamp_(x)), t(lambda: variants.clamp_torch_(x)),
                     2 * n * 4, "GB/s", bw))
    p, g, m, v = (torch.rand(n, device="cuda") for _ in range(4))
    step, lr = torch.tensor(5.0, device="cuda"), torch.tensor(1e-3, device="cuda")
    rows.append(_row("adam_step_", "image", "float32",
                     t(lambda: variants.adam_step_(p, g, m, v, step, lr, 0.9, 0.999, 1e-8)),
                     t(lambda: variants.adam_step_torch_(p, g, m, v, step, lr, 0.9, 0.999, 1e-8)), 7 * n * 4, "GB/s", bw))
    V = torch.randn(10, n, device="cuda")
    rows.append(_row("lbfgs_dots", "K=10", "float32", t(lambda: variants.lbfgs_dots(V, g)), t(lambda: V @ g),
                     11 * n * 4, "GB/s", bw))
    alpha = torch.tensor(0.5, device="cuda")
    rows.append(_row("lbfgs_axpy_", "image", "float32", t(lambda: variants.lbfgs_axpy_(p, alpha, g)),
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


def format_checks(checks) -> str:
    return "\n".join(f"accuracy {c['kernel']:<28}{c['dtype']:<10} max err {c['max_err']:.3g} "
                     f"(allowed {c['allowed']:.3g}) {'ok' if c['ok'] else 'FAIL'}" for c in checks)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    if args.emulate:
        checks = emulated_checks(dtypes)
        print(format_checks(checks))
        return 0 if all(c["ok"] for c in checks) else 1
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
    print(format_checks(checks))
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
