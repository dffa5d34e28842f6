"""``stylegrad bench --job``: images/hour through the job machinery, one process on one device
against every device of this host, and the scaling ratio.

Method: N different square images (the example content, shifted by a few pixels each) are
stylised as a job three ways, each into its own job folder:

- ``one process``: the driver computes every image itself on one device (CPU: ``threads`` torch
  threads per image, the job default).
- ``one process, all cores`` (CPU only, when there is more than one core per image): what a
  plain single process with every core gets; different threads, so its bytes differ.
- ``pool``: worker processes, one per GPU, or ``workers`` CPU processes with ``threads`` each.

images/hour = images / wall-clock seconds of the run, worker start-up included (``steady``
leaves it out). The scaling ratio is pool over one process at the same threads per image,
and the pool's outputs are compared byte for byte with the one-process outputs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import torch

from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError
from stylegrad.io import images as imgs
from stylegrad.jobs.local_pool import LocalPool
from stylegrad.jobs.runner import InlineExecutor, JobRequest, run_job
from stylegrad.system import usable_cores
from stylegrad.run.stylizer import parse_device

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _inputs(folder: Path, n: int, size: int, content: Optional[str]) -> list:
    base = imgs.load_image(content) if content else imgs.load_image(EXAMPLES / "content.png")
    h, w = base.shape[-2:]
    side = min(h, w)
    base = imgs.resize(base[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
                       .contiguous(), size, size)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:04d}.png"
        imgs.save_image(torch.roll(base, shifts=3 * i, dims=-1), p)
        paths.append(p)
    return paths


def _run(name: str, root: Path, inputs, style: str, config: StyleConfig, threads, executor) -> dict:
    out = root / name.replace(" ", "-").replace(",", "")
    req = JobRequest(out, inputs, [out / p.name for p in inputs], config, [style], cpu_threads=threads)
    s = run_job(req, executor)
    steady = s.wall_seconds - s.startup_seconds
    return {"name": name, "executor": s.executor, "workers": s.workers, "threads": threads,
            "ok": s.ok, "failed": s.failed, "wall_seconds": s.wall_seconds, "startup_seconds": s.startup_seconds,
            "images_per_hour": s.images_per_hour,
            "images_per_hour_steady": round(s.ok * 3600.0 / steady, 2) if steady > 0 else None,
            "seconds_per_image": s.seconds_per_image, "_dir": out}


def bench_job(images: int = 8, size: int = 64, iters: int = 20, device: str = "cpu", workers: Optional[int] = None,
              threads: int = 1, weights: str = "random", model: str = "vgg19", content: Optional[str] = None,
              style: Optional[str] = None) -> dict:
    if images < 1 or size < 1 or iters < 1:
        raise ConfigError("bench --job needs --images, --size and --iters >= 1")
    dev = parse_device(device)
    style = style or str(EXAMPLES / "style.png")
    config = StyleConfig(size=size, iters=iters, weights=weights, model=model, device=str(dev), print_every=iters + 1)
    with tempfile.TemporaryDirectory(prefix="stylegrad-bench-job-") as tmp:
        root = Path(tmp)
        inputs = _inputs(root / "inputs", images, size, content)
        runs = []
        if dev.type == "cpu":
            n = workers or max(1, usable_cores() // threads)
            one = _run("one process", root, inputs, style, config, threads, InlineExecutor("cpu"))
            runs.append(one)
            if usable_cores() > threads:
                runs.append(_run("one process, all cores", root, inputs, style, config, usable_cores(),
                                 InlineExecutor("cpu")))
            pool = _run("pool", root, inputs, style, config, threads, LocalPool(["cpu"] * n))
        else:
            gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            one = _run("one process", root, inputs, style, config, None, InlineExecutor(gpus[0]))
            runs.append(one)
            pool = _run("pool", root, inputs, style, config, None,
                        LocalPool(gpus, max(1, usable_cores() // len(gpus))))
        runs.append(pool)
        identical = all((one["_dir"] / p.name).read_bytes() == (pool["_dir"] / p.name).read_bytes()
                        for p in inputs if (one["_dir"] / p.name).exists())
        for r in runs:
            r.pop("_dir")
    ratio = (pool["images_per_hour"] / one["images_per_hour"]) if one["images_per_hour"] else None
    return {"device": str(dev), "size": size, "iters": iters, "images": images, "weights": weights, "model": model,
            "cores": usable_cores(), "torch": torch.__version__, "runs": runs,
            "scaling_ratio": round(ratio, 3) if ratio else None, "identical_outputs": identical}


def format_bench_job(r: dict) -> str:
    lines = [f"job bench: {r['images']} images {r['size']}x{r['size']}, {r['iters']} iterations, {r['device']} "
             f"({r['cores']} cores)",
             f"{'run':24s} {'workers':>7s} {'threads':>7s} {'wall s':>8s} {'start s':>8s} {'img/h':>9s} "
             f"{'img/h steady':>12s} {'p50 s/img':>9s}"]
    for x in r["runs"]:
        p50 = x["seconds_per_image"].get("p50")
        lines.append(f"{x['name']:24s} {x['workers']:7d} {str(x['threads'] or '-'):>7s} {x['wall_seconds']:8.1f} "
                     f"{x['startup_seconds']:8.1f} {x['images_per_hour'] or 0:9.1f} "
                     f"{x['images_per_hour_steady'] or 0:12.1f} {p50 if p50 is not None else float('nan'):9.2f}")
    lines.append(f"scaling ratio (pool / one process, same threads per image): {r['scaling_ratio']}; "
                 f"outputs identical: {r['identical_outputs']}")
    return "\n".join(lines)
