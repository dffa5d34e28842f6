"""Progress and outcome reporting for runs over many images: plain progress lines (for logs,
where a progress bar cannot draw), the ETA, the closing tally line and the JSON summary.

Pure functions and one small tracker, no printing: the CLI prints what they return, and a job
runner (several processes, resumable folders) can call the same functions with its own counts.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

# Without a terminal, and without an explicit --print-every, progress lines come at most this
# often (the config's print_every, 1 by default, would print every iteration into the log).
LOG_INTERVAL_S = 10.0


def finite_or_null(value):
    """``value`` with every non-finite float (a diverged run's loss) replaced by None, inside
    dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def json_line(obj: dict) -> str:
    """Strict JSON on one line: a non-finite number becomes null, never NaN or Infinity."""
    return json.dumps(finite_or_null(obj), allow_nan=False)


def format_duration(seconds: Optional[float]) -> str:
    """3725 -> "1h02m", 144 -> "2m24s", 9.4 -> "9s"; None or non-finite -> "?"."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def image_label(first: int, count: int, total: int) -> str:
    """"image 3/10" for one image, "images 3-4/10" for a batch (``first`` counts from 1)."""
    if count <= 1:
        return f"image {first}/{total}"
    return f"images {first}-{first + count - 1}/{total}"


def progress_line(label: str, name: str, it: int, iters: int, loss: float, ms_per_iter: Optional[float],
                  eta_s: Optional[float]) -> str:
    """One plain progress line: ``image 2/5 a.png: iter 40/500 loss 1.234e+05, 312 ms/iter, ETA 4m10s``."""
    ms = f"{ms_per_iter:.0f} ms/iter" if ms_per_iter is not None and math.isfinite(ms_per_iter) else "? ms/iter"
    return f"{label} {name}: iter {it}/{iters} loss {loss:.4g}, {ms}, ETA {format_duration(eta_s)}"


class JobClock:
    """Per-image ms/iteration and the ETA of a run over ``images`` images, from the work done
    so far, counted in image-iterations (each image weighs the same). Works whoever computes
    the images (one process or several workers): feed it ``progress(name, it)`` as iterations
    complete and ``finished(name)`` when an image is done or failed."""

    def __init__(self, images: int, iters: int, started: Optional[float] = None):
        self.images, self.iters = images, max(1, iters)
        self.started = time.perf_counter() if started is None else started
        self._finished = 0
        self._current: Dict[str, List[float]] = {}     # name -> [iteration, time of its iteration 0]

    def progress(self, name: str, it: int) -> None:
        cur = self._current.get(name)
        if cur is None or it < cur[0]:
            self._current[name] = [it, time.perf_counter()]
        else:
            cur[0] = it

    def finished(self, name: str) -> None:
        self._current.pop(name, None)
        self._finished += 1

    def ms_per_iter(self, name: str) -> Optional[float]:
        cur = self._current.get(name)
        if cur is None or cur[0] <= 0:
            return None
        return (time.perf_counter() - cur[1]) * 1e3 / cur[0]

    def eta_s(self) -> Optional[float]:
        """Seconds left for the whole run at the rate measured so far (None before any work)."""
        done = self._finished * self.iters + sum(c[0] for c in self._current.values())
        elapsed = time.perf_counter() - self.started
        if done <= 0 or elapsed <= 0:
            return None
        return max(0.0, self.images * self.iters - done) * elapsed / done


class LineThrottle:
    """Which reported iterations get a plain progress line: every ``every`` iterations when
    given (``--print-every`` on the command line), else at most one per ``interval_s``
    seconds; iteration 0 (an image starts) always. (The last iteration has its result line.)"""

    def __init__(self, every: Optional[int], interval_s: Optional[float] = None):
        self.every = every
        self.interval_s = LOG_INTERVAL_S if interval_s is None else interval_s
        self._last = -math.inf

    def due(self, it: int) -> bool:
        now = time.perf_counter()
        if it == 0:
            ok = True
        elif self.every is not None:
            ok = it % self.every == 0
        else:
            ok = now - self._last >= self.interval_s
        if ok:
            self._last = now
        return ok


class ProgressLines:
    """The plain progress lines of a run over ``names`` (pure: returns each line, or None when
    none is due; the caller prints). ``every``: ``--print-every`` when given on the command
    line, else lines are time-throttled (:class:`LineThrottle`). ``todo``: how many of the
    images will run (default all; fewer when a resumed job skips some)."""

    def __init__(self, names: Sequence[str], iters: Union[int, Sequence[int]], every: Optional[int],
                 todo: Optional[int] = None):
        # iters: per image, or (coarse-to-fine) per scale; iterations then count over all scales
        self.scale_iters = [iters] if isinstance(iters, int) else list(iters)
        self.index = {str(n): k for k, n in enumerate(names, 1)}
        self.total, self.iters = len(names), sum(self.scale_iters)
        self.clock = JobClock(len(names) if todo is None else todo, self.iters)
        self.throttle = LineThrottle(every)

    def progress(self, name: str, it: int, loss: float, scale: int = 1) -> Optional[str]:
        """``it``: iteration of scale ``scale`` (1-based) of this run's scales."""
        count = len(self.scale_iters)
        it = sum(self.scale_iters[:scale - 1]) + it          # iterations done over the whole run
        where = f"scale {scale}/{count}" if count > 1 else ""
        self.clock.progress(name, it)
        if it >= self.iters or not self.throttle.due(it):     # the last iteration has its result line
            return None
        k = self.index.get(str(name))
        label = image_label(k, 1, self.total) if k is not None else "image"
        shown = Path(str(name)).name + (f" {where}" if where else "")
        return progress_line(label, shown, it, self.iters, loss, self.clock.ms_per_iter(name), self.clock.eta_s())

    def finished(self, name: str) -> None:
        self.clock.finished(name)


def tally_line(ok: int, failed: int, written_to: str) -> str:
    """``ok 4, failed 2, written to out/`` (``nothing written`` when none is ok)."""
    where = f"written to {written_to}" if ok else "nothing written"
    return f"ok {ok}, failed {failed}, {where}"


def summary_object(kind: str, ok: int, failed: Sequence[str], written_to: str, seconds: float, exit_code: int,
                   **extra) -> Dict:
    """The last JSON object of a ``--json`` run: ``summary`` (``"run"``, or ``"job"`` for a job
    folder, whose counts come in ``extra``), counts, the failed images, where the outputs went,
    the wall time and the exit code."""
    return {"summary": kind, "ok": ok, "failed": len(failed), "failed_images": list(failed),
            "written_to": written_to if ok else None, "seconds": round(seconds, 3), "exit_code": exit_code, **extra}



def result_line(output: str, initial: float, final: float, scales: int, last_initial: float, seconds: float,
                where: str) -> str:
    """The line a finished image prints: the loss from its start to its end; with several
    scales, from the start of the full-size scale (losses of different sizes do not compare)."""
    if scales > 1:
        return (f"{output}: loss {last_initial:.4g} -> {final:.4g} at full size ({scales} scales; the first "
                f"started at {initial:.4g}) in {seconds:.1f} s ({where})")
    return f"{output}: loss {initial:.4g} -> {final:.4g} in {seconds:.1f} s ({where})"
