"""What ``stylegrad stylize`` prints, for a job folder and for ``-o`` alike: one :class:`CliReporter`
turns the job machinery's events (progress dicts, outcomes) into stderr lines, a tqdm bar and
``--json`` lines on stdout. ``-o`` is a job of one image run in this process
(``stylegrad.cli.stylize``), so both report through the same methods.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

from stylegrad.cli.plan import Reporting
from stylegrad.config import StyleConfig
from stylegrad.run import progress as prog

PROGRESS_KEYS = ("image", "scale", "scales", "width", "height", "iter", "loss", "content", "style", "tv", "ms")


def progress_lines(report: Reporting, config: StyleConfig, names: Sequence[str], todo: Optional[int] = None):
    """Plain lines (``progress.ProgressLines``) over the whole run: with several scales,
    iterations count over all of them; every ``--print-every`` only when it was given."""
    from stylegrad.run import scales

    every = config.print_every if report.print_every_given else None
    return prog.ProgressLines(names, [sc.iters for sc in scales.plan(config)], every, todo)


class CliReporter:
    """The job listener of the command line (``stylegrad.jobs.runner.run_job`` calls ``note``,
    ``planned``, ``progress`` and ``record``). ``single``: one image (``-o``): the bar counts its
    iterations, the result line names no device."""

    def __init__(self, report: Reporting, config: StyleConfig, outputs: Sequence[Path], names: Sequence[str],
                 random_weights: bool = False, single: bool = False):
        self.report = report
        self.config = config
        self.random_weights = random_weights
        self.outputs = list(outputs)
        self.names = list(names)
        self.single = single
        self.bar = None
        self.lines = progress_lines(report, config, names) if report.plain_lines else None
        self.failed: List[str] = []
        self.ok = 0
        if single:
            from stylegrad.run import scales
            self._scale_iters = [sc.iters for sc in scales.plan(config)]

    def _err(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def note(self, message: str) -> None:
        if not self.report.quiet:
            self._err(f"stylegrad: {message}")

    def warn(self, name: str, line: str) -> None:
        self._err(f"stylegrad: warning: {name}: {line}")

    def planned(self, total: int, todo: int, skipped: int) -> None:
        if self.random_weights and todo:
            self.note("using random VGG weights (--weights random): results show the machinery, not "
                      "ImageNet-quality style")
        if skipped:
            self.note(f"resume: {skipped} of {total} image(s) already done; {todo} to do")
        if self.lines is not None:
            self.lines.clock.images = todo
        if self.report.bar and todo:
            from tqdm import tqdm
            if self.single:
                self.bar = tqdm(total=sum(self._scale_iters), desc=f"{prog.image_label(1, 1, 1)} {Path(self.names[0]).name}",
                                file=sys.stderr, leave=False)
            else:
                self.bar = tqdm(total=todo, unit="img", desc="images", file=sys.stderr)

    def progress(self, ev: dict) -> None:
        if self.report.json:
            print(prog.json_line({k: ev[k] for k in PROGRESS_KEYS}), flush=True)
        if self.bar is not None and ev["iter"] > 0:
            if self.single:
                self.bar.update(sum(self._scale_iters[:ev["scale"] - 1]) + ev["iter"] - self.bar.n)
                self.bar.set_postfix(scale=f"{ev['scale']}/{ev['scales']}", loss=f"{ev['loss']:.4g}")
            else:
                scale = f" scale {ev['scale']}/{ev['scales']}" if ev["scales"] > 1 else ""
                self.bar.set_postfix_str(f"{Path(ev['image']).name}{scale} {ev['iter']}/{ev['iters']} "
                                         f"loss {ev['loss']:.4g}")
        if self.lines is not None:
            line = self.lines.progress(ev["image"], ev["iter"], ev["loss"], ev["scale"])
            if line:
                self._err(f"stylegrad: {line}")
        if ev.get("stopped") and not self.report.quiet and not self.report.json:
            cfg = self.config
            self._err(f"stylegrad: {ev['image']}: converged (--tol {cfg.tol:g} over {cfg.tol_window} iterations): "
                      f"stopped at iteration {ev['iter']} of {ev['iters']}"
                      + (f", scale {ev['scale']}/{ev['scales']}" if ev["scales"] > 1 else ""))

    def record(self, rec: dict, o: dict) -> None:
        """One image finished (``rec``: its manifest record, ``o``: the worker's outcome)."""
        name = o.get("name", rec["input"])
        if self.bar is not None:
            if self.single:
                self.bar.close()
                self.bar = None
            else:
                self.bar.update(1)
        if self.lines is not None:
            self.lines.finished(name)
        for w in o.get("warnings", []):
            self.warn(name, w)
        if rec["status"] != "ok":
            self.failed.append(name)
            msg = self.report.error_message(rec.get("error", ""))
            self._err(f"stylegrad: error: {name}: {msg}")
            if self.report.json:
                print(prog.json_line({"image": name, "status": "error", "error": msg}), flush=True)
            return
        self.ok += 1
        out = str(self.outputs[o["index"]])
        if self.report.json:
            print(prog.json_line({"image": name, "status": "ok", "output": out, "iters": o["iters"], "scales": o["scales"],
                                  "loss": o["loss"], "initial_loss": o["initial_loss"], "width": o["width"],
                                  "height": o["height"], "seconds": o["seconds"], "backend": o["backend"],
                                  "precision": o.get("precision"), "device": o.get("device")}), flush=True)
        elif not self.report.quiet and self.bar is None:
            where = f"{o['backend']} {o.get('precision', '')}" + ("" if self.single else f", {o.get('device')}")
            print(prog.result_line(out, o["initial_loss"], o["loss"], o["scales"],
                                   o.get("last_scale_initial_loss", o["initial_loss"]), o["seconds"], where),
                  file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
