"""Estimated against measured peak memory of runs on this machine (CPU).

Each case runs in a fresh process: content and style tensors (output size, so no resizing) are
made first, then the peak resident set of creating the Stylizer and running ``--iters``
iterations is measured above the resident set before it (``resource.getrusage`` ru_maxrss and
/proc/self/statm), and printed next to ``stylegrad.run.memory.estimate_run``'s estimate.

    python bench/memory_check.py                     # the default cases
    python bench/memory_check.py 512:torch:lbfgs     # SIZE:BACKEND:OPTIMIZER[:PRECISION[:POOL[:MODEL]]]
"""
from __future__ import annotations

import json
import subprocess
import sys

CASES = ["256:torch:adam", "768:torch:adam", "256:torch:lbfgs", "512:torch:lbfgs", "512:torch:lbfgs:fp32:max",
         "512:torch:lbfgs:bf16", "256:reference:lbfgs", "512:reference:lbfgs", "256:onnxruntime:lbfgs",
         "512:onnxruntime:lbfgs", "512:torch:lbfgs:fp32:avg:vgg16"]

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(2)
from stylegrad import StyleConfig, Stylizer
from stylegrad.run.memory import estimate_run
size, backend, opt, prec, pool, model = sys.argv[1:7]
size = int(size)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
g = torch.Generator().manual_seed(0)
content, style = torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g)
cfg = StyleConfig(size=size, iters=3, weights="random", backend=backend, optimizer=opt, precision=prec, pool=pool,
                  model=model)
est = estimate_run(cfg, (size, size), style_source_hw=[(size, size)], backend=backend)
before = rss()
st = Stylizer(cfg)
st.set_styles([style])
st.run_batch([content])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"measured": peak - before, "estimate": est.total, "parts": est.parts}))
"""


def run_case(spec: str) -> dict:
    parts = spec.split(":")
    size, backend, opt = parts[:3]
    prec = parts[3] if len(parts) > 3 else "fp32"
    pool = parts[4] if len(parts) > 4 else "avg"
    model = parts[5] if len(parts) > 5 else "vgg19"
    out = subprocess.run([sys.executable, "-c", CHILD, size, backend, opt, prec, pool, model],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["case"] = spec
    return r


def main(argv) -> None:
    print(f"{'case':34s} {'measured MiB':>12s} {'estimate MiB':>12s} {'est/meas':>8s}")
    for spec in argv or CASES:
        r = run_case(spec)
        print(f"{spec:34s} {r['measured'] / 2**20:12.0f} {r['estimate'] / 2**20:12.0f} "
              f"{r['estimate'] / r['measured']:8.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
