"""``stylegrad stylize``: one image (``-o``) or a job folder (``--out-dir``, ``engine/cli_job.py``).

The order of the work, so that whatever can be refused is refused before any compute:

1. options -> StyleConfig, job options; content paths and folders; output paths (exit 2);
2. style and ``--init`` images read (exit 2); every output folder exists and takes a file
   (``--out-dir`` can be created; the job creates it) (exit 2);
3. the run's peak memory estimated from the images' headers (``stylegrad.memory``): when no
   batch fits the limit the run is refused (exit 2); with ``--out-dir`` a batch over it fails
   alone when it is reached (``Stylizer.run_batch`` checks again);
4. ``--out-dir``: the job machinery runs it (manifest, resume, workers). ``-o``: the output's
   advisory lock taken, the image read, optimised, written atomically, the lock released;
5. a tally line on stderr and, with ``--json``, a summary object on stdout.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import images as imgs
from . import memory
from . import progress as prog
from .cli_config import config_from_args
from . import scales
from .cli_job import check_job_arguments, plain_progress_wanted, progress_lines, run_stylize_job
from .config import StyleConfig
from .errors import ConfigError, OutputLockedError, StyleGradError
from .fileio import check_creatable_folder, check_write_target, check_writable_folder, output_lock
from .jobs.work import planned_snapshots, snapshot_path as _snapshot_path
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
    check_planned_writes(outs, inputs, config, getattr(args, "overwrite", False),
                         getattr(args, "overwrite_remedy", "pass --overwrite to replace it"))
    return outs


def check_planned_writes(outputs: List[Path], inputs: List[Path], config: StyleConfig, overwrite: bool,
                         remedy: str) -> None:
    """Every file the run will write, checked before any compute by the one rule of
    ``stylegrad.fileio.check_write_target``: the outputs (named by the user: an existing one is
    replaced) and the ``--save-every`` snapshots (not named: an existing one only with
    --overwrite); none an input, no two the same file."""
    seen: Dict[str, Path] = {}
    for o in outputs:
        check_write_target(o, inputs, replace_existing=True, what="output")
        seen[os.path.abspath(o)] = o
    for o in outputs:
        for snap in planned_snapshots(o, config):
            check_write_target(snap, inputs, replace_existing=overwrite, what="--save-every snapshot",
                               remedy=remedy)
            key = os.path.abspath(snap)
            if key in seen:
                raise ConfigError(f"--save-every snapshot {snap} would overwrite {seen[key]}, written by this run")
            seen[key] = snap


def prepare_output_folders(args, outputs: List[Path]) -> None:
    """Check that every output's folder exists and takes a file, or for a ``--out-dir`` not
    there yet that it can be created (it is created by the job once every check passed, so a
    refused run leaves no folder behind): before any compute, a typo or a read-only
    filesystem is exit 2, not a lost run."""
    if args.out_dir:
        why = check_creatable_folder(args.out_dir)
        if why:
            raise ConfigError(f"cannot write the outputs: {why}")
    for folder in sorted({o.parent for o in outputs}, key=str):
        if args.out_dir and not folder.exists():
            continue
        why = check_writable_folder(folder)
        if why:
            raise ConfigError(f"cannot write the output{'s' if len(outputs) > 1 else ''}: {why}")


def check_memory_up_front(config: StyleConfig, contents: Sequence[Path], style_hw: List[Tuple[int, int]],
                          pair_styles: bool) -> None:
    """Estimate every batch's peak memory from the images' headers (batches as the job plans
    them: one output size, ``batch_size`` at most) and refuse the run (MemoryLimitError, exit
    2) when none fits. Unreadable headers are left to fail with their image."""
    from .backends.registry import resolve_backend
    from .stylizer import parse_device

    device = parse_device(config.device)
    backend = resolve_backend(config.backend, device, config.precision)
    groups: Dict[Tuple[int, int], list] = {}
    for i, c in enumerate(contents):
        try:
            h, w = imgs.image_size(c, config.max_memory)
        except StyleGradError:
            continue
        groups.setdefault(imgs.scaled_size(h, w, config.size, config.resize_filter), []).append((i, (h, w)))
    first_error = None
    for out_hw, members in groups.items():
        for k in range(0, len(members), config.batch_size):
            batch = members[k:k + config.batch_size]
            styles = [style_hw[i] for i, _ in batch] if pair_styles else style_hw
            source = max((hw for _, hw in batch), key=lambda hw: hw[0] * hw[1])
            est = memory.estimate_run(config, out_hw, len(batch), styles, source, backend=backend)
            what = (f"{prog.image_label(batch[0][0] + 1, len(batch), len(contents))} "
                    f"({Path(contents[batch[0][0]]).name}) at {out_hw[1]}x{out_hw[0]} px")
            try:
                memory.check_fits(est, config, device, what)
                return                      # one batch fits: the run goes on
            except StyleGradError as e:
                first_error = first_error or e
    if first_error is not None:
        raise first_error


def cmd_stylize(args, vgg=None, on_progress: Optional[Callable[[Progress], None]] = None) -> int:
    """``vgg``: weights already loaded (``stylegrad neural-style`` needs their convention first);
    ``on_progress``: called with every iteration's Progress besides the usual reporting (``-o`` runs)."""
    t_start = time.perf_counter()
    config = config_from_args(args)
    check_job_arguments(args, config)
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
    check_memory_up_front(config, contents, style_hw, args.pair_styles)
    if args.out_dir:
        return run_stylize_job(args, config, contents, outputs)   # a job folder: engine/cli_job.py
    return _stylize_one(args, config, contents[0], outputs[0], styles, t_start, vgg, on_progress)


def _json(obj: dict) -> str:
    """Strict JSON: a non-finite number (a diverged run) becomes null, never NaN."""
    clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in obj.items()}
    return json.dumps(clean, allow_nan=False)


def _stylize_one(args, config: StyleConfig, content: Path, out: Path, styles, t_start: float, vgg=None,
                 hook: Optional[Callable[[Progress], None]] = None) -> int:
    """``-o OUT``: one content image, under the output's advisory lock."""
    name = str(content)
    show_bar = not args.quiet and not args.json and sys.stderr.isatty()
    lines = progress_lines(args, config, [name]) if plain_progress_wanted(args) else None
    failed: List[str] = []

    def note(msg: str) -> None:
        if not args.quiet:
            print(f"stylegrad: {msg}", file=sys.stderr)

    def fail(e: BaseException) -> None:
        failed.append(name)
        msg = str(e) if isinstance(e, StyleGradError) else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        msg = getattr(args, "hints", None)(msg) if getattr(args, "hints", None) else msg   # neural-style's flags
        print(f"stylegrad: error: {name}: {msg}", file=sys.stderr)
        if args.json:
            print(_json({"image": name, "status": "error", "error": msg}), flush=True)

    def finish() -> int:
        rc = 1 if failed else 0
        ok = 0 if failed else 1
        if not args.quiet:
            print(f"stylegrad: {prog.tally_line(ok, len(failed), str(out))}", file=sys.stderr)
        if args.json:
            print(_json(prog.summary_object("run", ok, failed, str(out), time.perf_counter() - t_start, rc)), flush=True)
        return rc

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

    try:
        with output_lock(out):                 # a second process on this output fails here
            stylizer = Stylizer(config, vgg=vgg, download_progress=download_bar())
            try:
                stylizer.set_styles(styles)
                if stylizer.weights_are_random:
                    note("using random VGG weights (--weights random): results show the machinery, not "
                         "ImageNet-quality style")
                _optimise_and_write(args, config, stylizer, name, content, out, show_bar, lines, fail, hook)
            finally:
                stylizer.close()
    except OutputLockedError as e:             # another process writes this output: exit 1
        fail(e)
    return finish()


def _optimise_and_write(args, config, stylizer: Stylizer, name: str, content: Path, out: Path, show_bar: bool,
                        lines: Optional[prog.ProgressLines], fail, hook=None) -> None:
    try:
        tensor = imgs.resize_longest(imgs.load_image(content, config.max_memory), config.size, config.resize_filter)
    except Exception as e:          # an unreadable content image: its error, exit 1
        fail(e)
        return
    plan = scales.plan(config)
    bar = None
    if show_bar:
        from tqdm import tqdm
        bar = tqdm(total=sum(sc.iters for sc in plan), desc=f"{prog.image_label(1, 1, 1)} {content.name}",
                   file=sys.stderr, leave=False)

    def on_progress(p: Progress) -> None:
        if hook is not None:
            hook(p)
        reported = p.iter % config.print_every == 0 or p.iter == p.iters
        if args.json and reported:
            print(_json({"image": p.image, "scale": p.scale, "scales": p.scales, "width": p.width,
                         "height": p.height, "iter": p.iter, "loss": p.loss, "content": p.content,
                         "style": p.style, "tv": p.tv, "ms": round(p.ms, 3)}), flush=True)
        if bar is not None and p.iter > 0:
            bar.update(sum(sc.iters for sc in plan[:p.scale - 1]) + p.iter - bar.n)
            bar.set_postfix(scale=f"{p.scale}/{p.scales}", loss=f"{p.loss:.4g}")
        if lines is not None and reported:
            line = lines.progress(p.image, p.iter, p.loss, p.scale)
            if line:
                print(f"stylegrad: {line}", file=sys.stderr, flush=True)
        final = p.scale == p.scales and (p.iter == p.iters or p.stopped)   # the output itself, written below
        if p.stopped and not args.quiet and not args.json:
            print(f"stylegrad: {p.image}: converged (--tol {config.tol:g} over {config.tol_window} iterations): "
                  f"stopped at iteration {p.iter} of {p.iters}" + (f", scale {p.scale}/{p.scales}" if p.scales > 1 else ""),
                  file=sys.stderr)
        if p.snapshot is not None and config.save_every > 0 and not final:
            try:
                imgs.save_image(p.snapshot, _snapshot_path(out, p.iter, p.scale, p.scales))
            except Exception as e:  # a lost snapshot must not lose the run
                print(f"stylegrad: warning: {p.image}: snapshot {p.iter} not written: {e}", file=sys.stderr)

    try:
        result = stylizer.run_batch([tensor], callback=on_progress, names=[name])[0]
    except Exception as e:
        fail(e)
        return
    finally:
        if bar is not None:
            bar.close()
    if result.status != "ok":   # diverged or stalled: the run says why; nothing is written
        fail(StyleGradError(f"{result.message}; nothing written"))
        return
    try:
        imgs.save_image(result.image, out)
    except Exception as e:
        fail(e)
        return
    summary = {"image": name, "status": "ok", "output": str(out), "iters": config.iters, "scales": len(plan),
               "loss": result.final_loss, "initial_loss": result.history[0].loss,
               "width": int(result.image.shape[-1]), "height": int(result.image.shape[-2]),
               "seconds": round(result.seconds, 3), "backend": result.backend}
    if args.json:
        print(_json(summary), flush=True)
    elif not args.quiet:
        print(prog.result_line(str(out), result.initial_loss, result.final_loss, len(plan),
                               result.last_scale_initial_loss, result.seconds, result.backend), file=sys.stderr)
