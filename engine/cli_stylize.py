"""``stylegrad stylize``: many content images, one Stylizer, failures isolated per image.

The order of the work, so that whatever can be refused is refused before any compute:

1. options -> StyleConfig; content paths and folders; output paths (a bad one: exit 2);
2. style and ``--init`` images read (exit 2); every output folder exists and takes a file
   (``--out-dir`` is created) (exit 2);
3. content image headers read: an unreadable image fails alone; batches planned from the sizes;
   each batch's peak memory estimated (``stylegrad.memory``): a batch over the limit fails
   alone, and when every batch is over it the run is refused (exit 2);
4. weights loaded once; then per batch: the outputs' advisory locks taken (an output another
   process is writing fails alone), content read and resized, optimised, each image written
   atomically, locks released;
5. a tally line on stderr and, with ``--json``, a summary object on stdout.
"""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from . import images as imgs
from . import memory
from . import progress as prog
from .cli_config import config_from_args, given_options
from .config import StyleConfig
from .errors import ConfigError, MemoryLimitError, StyleGradError
from .fileio import check_writable_folder, output_lock
from .stylizer import Progress, Stylizer

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


def prepare_output_folders(args, outputs: List[Path]) -> None:
    """Create ``--out-dir``, then check that every output's folder exists and takes a file
    (before any compute: a typo or a read-only filesystem is exit 2, not a lost run)."""
    if args.out_dir:
        try:
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create --out-dir {args.out_dir}: {e.strerror or e}") from None
    for folder in sorted({o.parent for o in outputs}, key=str):
        why = check_writable_folder(folder)
        if why:
            raise ConfigError(f"cannot write the output{'s' if len(outputs) > 1 else ''}: {why}")


def _json(obj: dict) -> str:
    """Strict JSON: a non-finite number (a diverged run) becomes null, never NaN."""
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in obj.items()}
    return json.dumps(clean, allow_nan=False)


def _snapshot_path(out: Path, it: int) -> Path:
    return out.with_name(f"{out.stem}.iter{it:04d}{out.suffix}")


@dataclass
class Item:
    """One content image of the run: its path, output, index (from 1), size as read and output size."""

    path: Path
    out: Path
    index: int
    source_hw: Tuple[int, int]
    out_hw: Tuple[int, int]

    @property
    def name(self) -> str:
        return str(self.path)


class Reporter:
    """Everything the stylize command prints: notes, errors, results, progress, the tally."""

    def __init__(self, args, total: int):
        self.args, self.total = args, total
        self.show_bar = not args.quiet and not args.json and sys.stderr.isatty()
        self.plain = not args.quiet and not args.json and not self.show_bar
        every = args.print_every if "print_every" in given_options(args) else None
        self.throttle = prog.LineThrottle(every)
        self.ok, self.failed = 0, []

    def note(self, msg: str) -> None:
        if not self.args.quiet:
            print(f"stylegrad: {msg}", file=sys.stderr)

    def fail(self, name: str, e: BaseException, suffix: str = "") -> None:
        self.failed.append(name)
        msg = (str(e) if isinstance(e, StyleGradError) else
               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") + suffix
        print(f"stylegrad: error: {name}: {msg}", file=sys.stderr)
        if self.args.json:
            print(_json({"image": name, "status": "error", "error": msg}), flush=True)

    def written(self, summary: dict, initial: float) -> None:
        self.ok += 1
        if self.args.json:
            print(_json(summary), flush=True)
        elif not self.args.quiet:
            print(f"{summary['output']}: loss {initial:.4g} -> {summary['loss']:.4g} "
                  f"in {summary['seconds']:.1f} s ({summary['backend']})", file=sys.stderr)

    def finish(self, written_to: str, seconds: float) -> int:
        rc = 1 if self.failed else 0
        if not self.args.quiet:
            print(f"stylegrad: {prog.tally_line(self.ok, len(self.failed), written_to)}", file=sys.stderr)
        if self.args.json:
            print(_json(prog.summary_object(self.ok, self.failed, written_to, seconds, rc)), flush=True)
        return rc


def plan_items(config: StyleConfig, contents: List[Path], outputs: List[Path], rep: Reporter) -> List[Item]:
    """Content images whose header can be read, with their output sizes (others fail here)."""
    items = []
    for i, (c, o) in enumerate(zip(contents, outputs), 1):
        try:
            h, w = imgs.image_size(c, config.max_memory)
        except StyleGradError as e:
            rep.fail(str(c), e)
            continue
        items.append(Item(c, o, i, (h, w), imgs.scaled_size(h, w, config.size)))
    return items


def plan_batches(items: List[Item], batch_size: int) -> List[List[Item]]:
    """Batches of one output size (a batch needs one size), in the given order within a size."""
    groups: dict = {}
    for it in items:
        groups.setdefault(it.out_hw, []).append(it)
    return [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def check_batches_fit(config: StyleConfig, batches: List[List[Item]], style_hw: List[Tuple[int, int]],
                      pair_hw: Optional[dict], rep: Reporter) -> List[List[Item]]:
    """The batches whose estimated peak memory fits (``stylegrad.memory``); the images of the
    others fail. When none fits, the run is refused (MemoryLimitError, exit 2)."""
    from .backends.registry import resolve_backend
    from .stylizer import parse_device

    device = parse_device(config.device)
    backend = resolve_backend(config.backend, device, config.precision)
    fits, first_error = [], None
    for batch in batches:
        styles = [pair_hw[b.name] for b in batch] if pair_hw is not None else style_hw
        source = max((b.source_hw for b in batch), key=lambda hw: hw[0] * hw[1])
        est = memory.estimate_run(config, batch[0].out_hw, len(batch), styles, source, backend=backend)
        what = f"{prog.image_label(batch[0].index, len(batch), rep.total)} at {batch[0].out_hw[1]}x{batch[0].out_hw[0]} px"
        try:
            memory.check_fits(est, config, device, what)
        except MemoryLimitError as e:
            first_error = first_error or e
            if len(batches) > 1:
                for b in batch:
                    rep.fail(b.name, e)
            continue
        fits.append(batch)
    if batches and not fits:
        raise first_error
    return fits


def cmd_stylize(args) -> int:
    t_start = time.perf_counter()
    config = config_from_args(args)
    contents = expand_contents(args.content)
    outputs = plan_outputs(args, config, contents)
    budget = config.max_memory
    style_hw = [imgs.image_size(s, budget) for s in args.style]   # bad style: exit 2 before any work
    styles = [imgs.load_image(s, budget) for s in args.style]
    if args.pair_styles:
        if len(styles) != len(contents):
            raise ConfigError(f"--pair-styles needs one --style per content image: {len(styles)} for {len(contents)}")
        if config.style_blend_weights is not None:
            raise ConfigError("--pair-styles and --style-blend-weights do not go together")
    if config.init not in ("content", "noise"):
        imgs.load_image(config.init, budget)
    prepare_output_folders(args, outputs)
    rep = Reporter(args, len(contents))
    items = plan_items(config, contents, outputs, rep)
    pairs = dict(zip(map(str, contents), styles)) if args.pair_styles else None
    pair_hw = dict(zip(map(str, contents), style_hw)) if args.pair_styles else None
    batches = check_batches_fit(config, plan_batches(items, config.batch_size), style_hw, pair_hw, rep)
    if not batches:      # every content image failed already: no weights to load
        return rep.finish(args.output or args.out_dir, time.perf_counter() - t_start)

    def download_bar():
        state = {}

        def cb(done, total):
            if not rep.show_bar:
                return
            if "bar" not in state:
                from tqdm import tqdm
                state["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc="VGG weights", file=sys.stderr)
            state["bar"].update(done - state["bar"].n)
        return cb

    stylizer = Stylizer(config, download_progress=download_bar())
    stylizer.set_styles(styles if not args.pair_styles else styles[:1])
    if stylizer.weights_are_random:
        rep.note("using random VGG weights (--weights random): results show the machinery, not ImageNet-quality style")
    try:
        _run_batches(args, config, stylizer, batches, rep, pairs)
    finally:
        stylizer.close()
    return rep.finish(args.output or args.out_dir, time.perf_counter() - t_start)


def _run_batches(args, config: StyleConfig, stylizer: Stylizer, batches: List[List[Item]], rep: Reporter,
                 pairs: Optional[dict]) -> None:
    clock = prog.JobClock([b[0].out_hw[0] * b[0].out_hw[1] * len(b) for b in batches], config.iters)
    for bi, batch in enumerate(batches):
        clock.start_batch(bi)
        with ExitStack() as held:
            ran = _run_one_batch(args, config, stylizer, batch, rep, pairs, clock, held)
        clock.end_batch(ran)


def _run_one_batch(args, config, stylizer, batch: List[Item], rep: Reporter, pairs, clock: prog.JobClock,
                   held: ExitStack) -> bool:
    """Lock, read, optimise and write one batch; False when none of it could run."""
    ready = []
    for item in batch:
        try:
            held.enter_context(output_lock(item.out))     # released when the batch is written
            tensor = imgs.resize_longest(imgs.load_image(item.path, config.max_memory), config.size)
        except Exception as e:  # locked by another process, unreadable: this image fails alone
            rep.fail(item.name, e)
            continue
        ready.append((item, tensor))
    if not ready:
        return False
    names = [it.name for it, _ in ready]
    items = {it.name: it for it, _ in ready}
    label = prog.image_label(ready[0][0].index, len(ready), rep.total)
    bar = None
    if rep.show_bar:
        from tqdm import tqdm
        desc = f"{label} {Path(names[0]).name}" + (f" +{len(names) - 1}" if len(names) > 1 else "")
        bar = tqdm(total=config.iters, desc=desc, file=sys.stderr, leave=False)
    line_due = {"iter": -1, "due": False}

    def on_progress(p: Progress) -> None:
        if p.image == names[0]:
            clock.update(p.iter)
        reported = p.iter % config.print_every == 0 or p.iter == config.iters
        if args.json and reported:
            print(_json({"image": p.image, "iter": p.iter, "loss": p.loss, "content": p.content,
                         "style": p.style, "tv": p.tv, "ms": round(p.ms, 3)}), flush=True)
        if bar is not None and p.image == names[0] and p.iter > 0:
            bar.update(p.iter - bar.n)
            bar.set_postfix(loss=f"{p.loss:.4g}")
        if rep.plain and reported and p.iter < config.iters:
            if line_due["iter"] != p.iter:
                line_due.update(iter=p.iter, due=rep.throttle.due(p.iter))
            if line_due["due"]:
                it = items[p.image]
                print("stylegrad: " + prog.progress_line(prog.image_label(it.index, 1, rep.total), it.path.name,
                                                         p.iter, config.iters, p.loss, clock.ms_per_iter(),
                                                         clock.eta_s()), file=sys.stderr, flush=True)
        if p.snapshot is not None and p.iter < config.iters:
            try:
                imgs.save_image(p.snapshot, _snapshot_path(items[p.image].out, p.iter))
            except Exception as e:  # a lost snapshot must not lose the run
                print(f"stylegrad: warning: {p.image}: snapshot {p.iter} not written: {e}", file=sys.stderr)

    try:
        results = stylizer.run_batch([t for _, t in ready], callback=on_progress, names=names,
                                     styles=[[pairs[n]] for n in names] if pairs else None)
    except Exception as e:  # the whole batch failed; other batches go on
        for n in names:
            rep.fail(n, e)
        return True
    finally:
        if bar is not None:
            bar.close()
    for name, result in zip(names, results):
        out = items[name].out
        if result.status != "ok":   # diverged or stalled: the run says why; nothing is written
            rep.fail(name, StyleGradError(f"{result.message}; nothing written"))
            continue
        try:
            imgs.save_image(result.image, out)
        except Exception as e:  # one image failing to write must not lose the others
            rep.fail(name, e)
            continue
        rep.written({"image": name, "status": "ok", "output": str(out), "iters": config.iters,
                     "loss": result.final_loss, "initial_loss": result.history[0].loss,
                     "width": int(result.image.shape[-1]), "height": int(result.image.shape[-2]),
                     "seconds": round(result.seconds, 3), "backend": result.backend}, result.history[0].loss)
    return True
