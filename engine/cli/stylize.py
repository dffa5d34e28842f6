"""``stylegrad stylize``: one image (``-o``) or a job folder (``--out-dir``, ``engine/cli/job.py``).

The command line becomes a :class:`~stylegrad.cli.plan.StylizePlan` once, at the door
(``stylegrad.cli.plan``); everything here works from the plan. The order of the work, so that
whatever can be refused is refused before any compute:

1. options -> plan: StyleConfig, job options; content paths and folders; output paths (exit 2);
2. style and ``--init`` images read (exit 2); every output folder exists and takes a file
   (``--out-dir`` can be created; the job creates it) (exit 2);
3. the run's peak memory estimated from the images' headers (``stylegrad.run.memory``): when no
   batch fits the limit the run is refused (exit 2); with ``--out-dir`` a batch over it fails
   alone when it is reached (``Stylizer.run_batch`` checks again);
4. the work, by the job worker (``stylegrad.jobs.work.JobWorker``) either way: ``--out-dir``
   through the job machinery (manifest, resume, workers); ``-o`` as a job of one image in this
   process, without a manifest (its output's advisory lock taken, the image read, optimised,
   written atomically, the lock released);
5. one reporter for both (``stylegrad.cli.report``): a tally line on stderr and, with
   ``--json``, a summary object on stdout.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from stylegrad.cli.job import run_stylize_job
from stylegrad.cli.plan import StylizePlan, expand_contents, plan_from_args
from stylegrad.cli.report import CliReporter
from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError, OutputLockedError, StyleGradError, error_text
from stylegrad.io import images as imgs
from stylegrad.io.fileio import check_creatable_folder, check_write_target, check_writable_folder, output_lock
from stylegrad.jobs.work import planned_snapshots
from stylegrad.run import memory
from stylegrad.run import progress as prog
from stylegrad.run.stylizer import Progress

__all__ = ["cmd_stylize", "run_plan", "expand_contents"]


def check_outputs(plan: StylizePlan) -> None:
    """The output paths' names, and every file the run will write (outputs, snapshots)."""
    config = plan.config
    for o in plan.outputs:
        imgs.check_output_path(o)
    inputs = list(plan.contents) + [Path(s) for s in plan.styles]
    inputs += [Path(m) for m in (config.content_mask,) + tuple(config.style_masks or ()) if isinstance(m, str)]
    if config.init not in ("content", "noise"):
        inputs.append(Path(config.init))
    check_planned_writes(list(plan.outputs), inputs, config, plan.overwrite, plan.overwrite_remedy)


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


def prepare_output_folders(plan: StylizePlan) -> None:
    """Check that every output's folder exists and takes a file, or for a ``--out-dir`` not
    there yet that it can be created (it is created by the job once every check passed, so a
    refused run leaves no folder behind): before any compute, a typo or a read-only
    filesystem is exit 2, not a lost run."""
    outputs = plan.outputs
    out_dir = plan.job.out_dir if plan.job is not None else None
    if out_dir is not None:
        why = check_creatable_folder(out_dir)
        if why:
            raise ConfigError(f"cannot write the outputs: {why}")
    for folder in sorted({o.parent for o in outputs}, key=str):
        if out_dir is not None and not folder.exists():
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


def check_masks(plan: StylizePlan, style_hw, budget) -> None:
    """Region masks (``stylegrad.terms``) read and checked against the images before any work;
    a mask's warning (snapped anti-aliased pixels) is one line on stderr."""
    import warnings

    from stylegrad import terms

    config = plan.config
    if config.content_mask is None and not config.style_masks:
        return
    if config.style_masks and plan.pair_styles:
        raise ConfigError("--style-mask does not go with --pair-styles (each image would take one painting of "
                          "several masks); use --content-mask alone, or one run per painting")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        terms.check_inputs(config, [imgs.image_size(c, budget) for c in plan.contents], style_hw)
    for w in caught:
        if not plan.report.quiet:
            print(f"stylegrad: warning: {w.message}", file=sys.stderr)


def cmd_stylize(args) -> int:
    """``stylegrad stylize``: the namespace becomes a plan here, and only here."""
    return run_plan(plan_from_args(args))


def run_plan(plan: StylizePlan, vgg=None, on_iteration: Optional[Callable[[Progress], None]] = None) -> int:
    """Check everything that can be checked before compute, then run the plan. ``vgg``: weights
    already loaded (``stylegrad neural-style`` needs their convention first); ``on_iteration``:
    called with every iteration's Progress besides the usual reporting (``-o`` runs)."""
    t_start = time.perf_counter()
    config = plan.config
    check_outputs(plan)
    budget = config.max_memory
    style_hw = [imgs.image_size(s, budget) for s in plan.styles]   # bad style: exit 2 before any work
    styles = [imgs.load_image(s, budget) for s in plan.styles]
    check_masks(plan, style_hw, budget)
    if plan.pair_styles:
        if len(plan.styles) != len(plan.contents):
            raise ConfigError(f"--pair-styles needs one --style per content image: {len(plan.styles)} for "
                              f"{len(plan.contents)}")
        if config.style_blend_weights is not None:
            raise ConfigError("--pair-styles and --style-blend-weights do not go together")
    if config.init not in ("content", "noise"):
        imgs.load_image(config.init, budget)
    prepare_output_folders(plan)
    check_memory_up_front(config, plan.contents, style_hw, plan.pair_styles)
    if plan.job is not None:
        return run_stylize_job(plan)       # a job folder: engine/cli/job.py
    return _stylize_one(plan, styles, t_start, vgg, on_iteration)


def _stylize_one(plan: StylizePlan, styles, t_start: float, vgg=None,
                 on_iteration: Optional[Callable[[Progress], None]] = None) -> int:
    """``-o OUT``: a job of one image, run by the job worker in this process (no manifest): the
    worker takes the output's advisory lock, reads, optimises and writes, as it does for a job."""
    from stylegrad.jobs.work import Item, JobSpec, JobWorker, Task

    config, report = plan.config, plan.report
    content, out = plan.contents[0], plan.outputs[0]
    name = str(content)
    reporter = CliReporter(report, config, [out], [name], single=True)

    def download_bar():
        state = {}

        def cb(done, total):
            if not report.bar:
                return
            if "bar" not in state:
                from tqdm import tqdm
                state["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc="VGG weights", file=sys.stderr)
            state["bar"].update(done - state["bar"].n)
        return cb

    # the weights or the styles failing to load raise (exit 2 or 1 by their kind, as any run);
    # the image's own failures (its file, its lock, divergence, the write) are its outcome
    # the output's lock first, for the whole run: a link planted at the lock file is refused
    # (exit 2); another process writing this output is this image's failure (exit 1)
    try:
        with output_lock(out):
            worker = JobWorker(JobSpec(config, plan.styles), config.device, vgg=vgg,
                               download_progress=download_bar(), on_iteration=on_iteration, style_images=styles)
            try:
                reporter.random_weights = worker.weights_are_random
                reporter.planned(1, 1, 0)
                outcome = worker.run_task(Task(0, (Item(0, name, name, str(out)),)), on_progress=reporter.progress,
                                          lock_outputs=False)[0]
            finally:
                worker.close()
                reporter.close()
    except OutputLockedError as e:
        outcome = {"index": 0, "name": name, "input": name, "status": "error", "error": error_text(e)}
    reporter.record(outcome, outcome)
    rc = 1 if reporter.failed else 0
    if not report.quiet:
        print(f"stylegrad: {prog.tally_line(reporter.ok, len(reporter.failed), str(out))}", file=sys.stderr)
    if report.json:
        print(prog.json_line(prog.summary_object("run", reporter.ok, reporter.failed, str(out),
                                                 time.perf_counter() - t_start, rc)), flush=True)
    return rc
