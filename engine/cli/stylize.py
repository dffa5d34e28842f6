"""``stylegrad stylize``: one image (``-o``) or a job folder (``--out-dir``, ``engine/cli/job.py``).

The order of the work, so that whatever can be refused is refused before any compute:

1. options -> StyleConfig, job options; content paths and folders; output paths (exit 2);
2. style and ``--init`` images read (exit 2); every output folder exists and takes a file
   (``--out-dir`` can be created; the job creates it) (exit 2);
3. the run's peak memory estimated from the images' headers (``stylegrad.run.memory``): when no
   batch fits the limit the run is refused (exit 2); with ``--out-dir`` a batch over it fails
   alone when it is reached (``Stylizer.run_batch`` checks again);
4. ``--out-dir``: the job machinery runs it (manifest, resume, workers). ``-o``: the output's
   advisory lock taken, the image read, optimised, written atomically, the lock released;
5. a tally line on stderr and, with ``--json``, a summary object on stdout.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from stylegrad.cli.job import check_job_arguments, run_stylize_job
from stylegrad.cli.options import config_from_args, plain_progress_wanted, progress_lines
from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError, OutputLockedError, StyleGradError, error_text
from stylegrad.io import images as imgs
from stylegrad.io.fileio import check_creatable_folder, check_write_target, check_writable_folder, output_lock
from stylegrad.jobs.work import optimise_and_write, planned_snapshots
from stylegrad.run import memory
from stylegrad.run import progress as prog
from stylegrad.run import scales
from stylegrad.run.stylizer import Progress, Stylizer

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
    inputs += [Path(m) for m in (config.content_mask,) + tuple(config.style_masks or ()) if isinstance(m, str)]
    if config.init not in ("content", "noise"):
        inputs.append(Path(config.init))
    check_planned_writes(outs, inputs, config, getattr(args, "overwrite", False),
                         getattr(args, "overwrite_remedy", "pass --overwrite to replace it"))
    return outs


def check_planned_writes(outputs: List[Path], inputs: List[Path], config: StyleConfig, overwrite: bool,
                         remedy: str) -> None:
    """Every file the run will write, checked before any compute by the one rule of
    ``stylegrad.io.fileio.check_write_target``: the outputs (named by the user: an existing one is
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
    from stylegrad.backends.registry import resolve_backend_and_precision
    from stylegrad.run.stylizer import parse_device

    from stylegrad.jobs.runner import plan_batches

    device = parse_device(config.device)
    backend, precision = resolve_backend_and_precision(config.backend, device, config.precision, config.size)
    config = config.replace(precision=precision)    # the memory estimate counts what will run
    first_error = None
    for batch in plan_batches(contents, config.size, config.batch_size, config.resize_filter):
        try:
            sources = [imgs.image_size(contents[i], config.max_memory) for i in batch]
        except StyleGradError:
            continue
        out_hw = imgs.scaled_size(*sources[0], config.size, config.resize_filter)
        styles = [style_hw[i] for i in batch] if pair_styles else style_hw
        source = max(sources, key=lambda hw: hw[0] * hw[1])
        est = memory.estimate_run(config, out_hw, len(batch), styles, source, backend=backend)
        what = (f"{prog.image_label(batch[0] + 1, len(batch), len(contents))} "
                f"({Path(contents[batch[0]]).name}) at {out_hw[1]}x{out_hw[0]} px")
        try:
            memory.check_fits(est, config, device, what)
            return                      # one batch fits: the run goes on
        except StyleGradError as e:
            first_error = first_error or e
    if first_error is not None:
        raise first_error


def with_style_masks(args, config: StyleConfig) -> StyleConfig:
    """The config with ``--style-mask`` (style index, FILE) pairs as ``style_masks``, one per --style."""
    pairs = getattr(args, "style_mask_list", None) or []
    if not pairs:
        return config
    masks = [None] * len(args.style)
    for i, path in pairs:
        masks[i] = path
    return config.replace(style_masks=tuple(masks))


def check_masks(args, config: StyleConfig, contents: List[Path], style_hw, budget) -> None:
    """Region masks (``stylegrad.terms``) read and checked against the images before any work;
    a mask's warning (snapped anti-aliased pixels) is one line on stderr."""
    import warnings

    from stylegrad import terms

    if config.content_mask is None and not config.style_masks:
        return
    if config.style_masks and getattr(args, "pair_styles", False):
        raise ConfigError("--style-mask does not go with --pair-styles (each image would take one painting of "
                          "several masks); use --content-mask alone, or one run per painting")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        terms.check_inputs(config, [imgs.image_size(c, budget) for c in contents], style_hw)
    for w in caught:
        if not args.quiet:
            print(f"stylegrad: warning: {w.message}", file=sys.stderr)


def cmd_stylize(args, vgg=None, on_progress: Optional[Callable[[Progress], None]] = None) -> int:
    """``vgg``: weights already loaded (``stylegrad neural-style`` needs their convention first);
    ``on_progress``: called with every iteration's Progress besides the usual reporting (``-o`` runs)."""
    t_start = time.perf_counter()
    config = with_style_masks(args, config_from_args(args))
    check_job_arguments(args, config)
    contents = expand_contents(args.content)
    outputs = plan_outputs(args, config, contents)
    budget = config.max_memory
    style_hw = [imgs.image_size(s, budget) for s in args.style]   # bad style: exit 2 before any work
    styles = [imgs.load_image(s, budget) for s in args.style]
    check_masks(args, config, contents, style_hw, budget)
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
        return run_stylize_job(args, config, contents, outputs)   # a job folder: engine/cli/job.py
    return _stylize_one(args, config, contents[0], outputs[0], styles, t_start, vgg, on_progress)


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
        msg = error_text(e)
        msg = getattr(args, "hints", None)(msg) if getattr(args, "hints", None) else msg   # neural-style's flags
        print(f"stylegrad: error: {name}: {msg}", file=sys.stderr)
        if args.json:
            print(prog.json_line({"image": name, "status": "error", "error": msg}), flush=True)

    def finish() -> int:
        rc = 1 if failed else 0
        ok = 0 if failed else 1
        if not args.quiet:
            print(f"stylegrad: {prog.tally_line(ok, len(failed), str(out))}", file=sys.stderr)
        if args.json:
            print(prog.json_line(prog.summary_object("run", ok, failed, str(out), time.perf_counter() - t_start, rc)), flush=True)
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

    def on_progress(p: Progress) -> None:     # after write_snapshot (optimise_and_write)
        if hook is not None:
            hook(p)
        reported = p.iter % config.print_every == 0 or p.iter == p.iters
        if args.json and reported:
            print(prog.json_line({"image": p.image, "scale": p.scale, "scales": p.scales, "width": p.width,
                         "height": p.height, "iter": p.iter, "loss": p.loss, "content": p.content,
                         "style": p.style, "tv": p.tv, "ms": round(p.ms, 3)}), flush=True)
        if bar is not None and p.iter > 0:
            bar.update(sum(sc.iters for sc in plan[:p.scale - 1]) + p.iter - bar.n)
            bar.set_postfix(scale=f"{p.scale}/{p.scales}", loss=f"{p.loss:.4g}")
        if lines is not None and reported:
            line = lines.progress(p.image, p.iter, p.loss, p.scale)
            if line:
                print(f"stylegrad: {line}", file=sys.stderr, flush=True)
        if p.stopped and not args.quiet and not args.json:
            print(f"stylegrad: {p.image}: converged (--tol {config.tol:g} over {config.tol_window} iterations): "
                  f"stopped at iteration {p.iter} of {p.iters}" + (f", scale {p.scale}/{p.scales}" if p.scales > 1 else ""),
                  file=sys.stderr)

    def on_warning(image: str, line: str) -> None:
        print(f"stylegrad: warning: {image}: {line}", file=sys.stderr)

    try:   # the one image-writing path, shared with job workers
        written = optimise_and_write(stylizer, [tensor], [name], [out], config, on_progress=on_progress,
                                     on_warning=on_warning)[0]
    except Exception as e:
        fail(e)
        return
    finally:
        if bar is not None:
            bar.close()
    if written.status != "ok":  # diverged or stalled (the run says why), or the write failed: nothing written
        fail(StyleGradError(written.error))
        return
    result = written.result
    summary = {"image": name, "status": "ok", "output": str(out), "iters": config.iters, "scales": len(plan),
               "loss": result.final_loss, "initial_loss": result.history[0].loss,
               "width": int(result.image.shape[-1]), "height": int(result.image.shape[-2]),
               "seconds": round(result.seconds, 3), "backend": result.backend,
               "precision": result.precision}
    if args.json:
        print(prog.json_line(summary), flush=True)
    elif not args.quiet:
        print(prog.result_line(str(out), result.initial_loss, result.final_loss, len(plan),
                               result.last_scale_initial_loss, result.seconds,
                               f"{result.backend} {result.precision}"), file=sys.stderr)
