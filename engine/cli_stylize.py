"""``stylegrad stylize``: many content images, one Stylizer, failures isolated per image."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import List

from . import images as imgs
from . import scales
from .cli_config import config_from_args
from .cli_job import check_job_arguments, run_stylize_job
from .config import StyleConfig
from .errors import ConfigError, StyleGradError
from .jobs.work import snapshot_path as _snapshot_path
from .stylizer import Progress, Stylizer
import torch

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


def expand_contents(items: List[str]) -> List[Path]:
    paths: List[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise ConfigError(f"folder {p} holds no images")
            paths.extend(found)
        else:
            paths.append(p)
    return paths


def plan_outputs(args, config: StyleConfig, contents: List[Path]) -> List[Path]:
    if args.output:
        if len(contents) != 1:
            raise ConfigError(f"-o takes one content image, got {len(contents)}: use --out-dir DIR")
        outs = [Path(args.output)]
    else:
        d = Path(args.out_dir)
        if d.exists() and not d.is_dir():
            raise ConfigError(f"--out-dir {d} exists and is not a folder")
        ext = args.ext.lstrip(".").lower()
        outs = [d / f"{c.stem}.{ext}" for c in contents]
        if len(set(outs)) != len(outs):
            raise ConfigError("two content images share a name; their outputs would collide in --out-dir")
    for o in outs:
        imgs.check_output_path(o)
    inputs = list(contents) + [Path(s) for s in args.style]
    if config.init not in ("content", "noise"):
        inputs.append(Path(config.init))
    for o in outs:
        for i in inputs:
            if imgs.same_file(o, i):
                raise ConfigError(f"output {o} is an input image; refusing to overwrite it")
    return outs


def _json(obj: dict) -> str:
    """Strict JSON: a non-finite number (a diverged run) becomes null, never NaN."""
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in obj.items()}
    return json.dumps(clean, allow_nan=False)


def cmd_stylize(args, vgg=None) -> int:
    """``vgg``: weights already loaded (``stylegrad neural-style`` needs their convention first)."""
    config = config_from_args(args)
    check_job_arguments(args, config)
    contents = expand_contents(args.content)
    outputs = plan_outputs(args, config, contents)
    styles = [imgs.load_image(s) for s in args.style]          # bad style: exit 2 before any work
    if args.pair_styles:
        if len(styles) != len(contents):
            raise ConfigError(f"--pair-styles needs one --style per content image: {len(styles)} for {len(contents)}")
        if config.style_blend_weights is not None:
            raise ConfigError("--pair-styles and --style-blend-weights do not go together")
    if config.init not in ("content", "noise"):
        imgs.load_image(config.init)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        return run_stylize_job(args, config, contents, outputs)   # a job folder: engine/cli_job.py
    show_bar = not args.quiet and not args.json and sys.stderr.isatty()

    def note(msg: str) -> None:
        if not args.quiet:
            print(f"stylegrad: {msg}", file=sys.stderr)

    def download_bar():
        state = {}

        def cb(done, total):
            if not show_bar:
                return
            if "bar" not in state:
                from tqdm import tqdm
                state["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc="VGG weights", file=sys.stderr)
            state["bar"].update(done - state["bar"].n)
        return cb

    stylizer = Stylizer(config, vgg=vgg, download_progress=download_bar())
    stylizer.set_styles(styles if not args.pair_styles else styles[:1])
    if stylizer.weights_are_random:
        note("using random VGG weights (--weights random): results show the machinery, not ImageNet-quality style")

    try:
        pairs = dict(zip(map(str, contents), styles)) if args.pair_styles else None
        return _run_all(args, config, stylizer, contents, outputs, show_bar, pairs)
    finally:
        stylizer.close()


def _run_all(args, config, stylizer, contents, outputs, show_bar, pairs=None) -> int:
    failed = 0
    plan = scales.plan(config)

    def fail(name: str, e: BaseException) -> None:
        nonlocal failed
        failed += 1
        msg = str(e) if isinstance(e, StyleGradError) else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(f"stylegrad: error: {name}: {msg}", file=sys.stderr)
        if args.json:
            print(_json({"image": name, "status": "error", "error": msg}), flush=True)

    # Read every content image first: one that cannot be read fails alone.
    loaded = []
    for content, out in zip(contents, outputs):
        try:
            loaded.append((str(content), out, imgs.resize_longest(imgs.load_image(content), config.size)))
        except Exception as e:
            fail(str(content), e)
    # Group by size (a batch needs one size), keep the given order inside each group.
    groups: dict = {}
    for item in loaded:
        groups.setdefault(tuple(item[2].shape), []).append(item)
    batches = [g[i:i + config.batch_size] for g in groups.values() for i in range(0, len(g), config.batch_size)]

    for batch in batches:
        names = [b[0] for b in batch]
        outs = {b[0]: b[1] for b in batch}
        bar = None
        if show_bar:
            from tqdm import tqdm
            desc = Path(names[0]).name + (f" +{len(names) - 1}" if len(names) > 1 else "")
            bar = tqdm(total=sum(sc.iters for sc in plan), desc=desc, file=sys.stderr, leave=False)

        def on_progress(p: Progress) -> None:
            reported = p.iter % config.print_every == 0 or p.iter == p.iters
            if args.json and reported:
                print(_json({"image": p.image, "scale": p.scale, "scales": p.scales, "width": p.width,
                             "height": p.height, "iter": p.iter, "loss": p.loss, "content": p.content,
                             "style": p.style, "tv": p.tv, "ms": round(p.ms, 3)}), flush=True)
            if bar is not None and p.image == names[0] and p.iter > 0:
                bar.update(sum(sc.iters for sc in plan[:p.scale - 1]) + p.iter - bar.n)
                bar.set_postfix(scale=f"{p.scale}/{p.scales}", loss=f"{p.loss:.4g}")
            final = p.scale == p.scales and p.iter == p.iters     # the output itself, written below
            if p.snapshot is not None and config.save_every > 0 and not final:
                try:
                    imgs.save_image(p.snapshot, _snapshot_path(outs[p.image], p.iter, p.scale, p.scales))
                except Exception as e:  # a lost snapshot must not lose the run
                    print(f"stylegrad: warning: {p.image}: snapshot {p.iter} not written: {e}", file=sys.stderr)

        try:
            results = stylizer.run_batch([b[2] for b in batch], callback=on_progress, names=names,
                                         styles=[[pairs[n]] for n in names] if pairs else None)
        except Exception as e:  # the whole batch failed; other batches go on
            if bar is not None:
                bar.close()
            for n in names:
                fail(n, e)
            continue
        if bar is not None:
            bar.close()
        for name, result in zip(names, results):
            out = outs[name]
            if result.status != "ok":   # diverged or stalled: the run says why; nothing is written
                fail(name, StyleGradError(f"{result.message}; nothing written"))
                continue
            try:
                imgs.save_image(result.image, out)
            except Exception as e:  # one image failing to write must not lose the others
                fail(name, e)
                continue
            summary = {"image": name, "status": "ok", "output": str(out), "iters": config.iters, "scales": len(plan),
                       "loss": result.final_loss, "initial_loss": result.history[0].loss,
                       "width": int(result.image.shape[-1]), "height": int(result.image.shape[-2]),
                       "seconds": round(result.seconds, 3), "backend": result.backend}
            if args.json:
                print(_json(summary), flush=True)
            elif not args.quiet:
                print(f"{out}: loss {result.history[0].loss:.4g} -> {result.final_loss:.4g} "
                      f"in {result.seconds:.1f} s ({result.backend})", file=sys.stderr)
    return 1 if failed else 0
