"""Progress and outcome reporting for runs over many images: plain progress lines (for logs,
where a progress bar cannot draw), the ETA, the closing tally line and the JSON summary.

Pure functions and one small tracker, no printing: the CLI prints what they return, and a job
runner (several processes, resumable folders) can call the same functions with its own counts.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

# Without a terminal, and without an explicit --print-every, progress lines come at most this
# often (the config's print_every, 1 by default, would print every iteration into the log).
LOG_INTERVAL_S = 10.0


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


@dataclass
class JobClock:
    """Elapsed time and ETA of a job made of batches, from the work done so far.

    Work is counted in pixel-iterations (pixels of a batch x its iterations), so batches of
    different sizes are weighed by their cost. ``start_batch`` when a batch begins,
    ``update(it)`` as its iterations complete, ``end_batch`` when it is done (or failed).
    """

    batch_work: Sequence[int]            # pixels x images of each batch, in run order
    iters: int
    started: float = field(default_factory=time.perf_counter)
    _done: float = 0.0                   # pixel-iterations of finished batches
    _index: int = -1
    _batch_start: float = 0.0
    _batch_it: int = 0
    _skipped: float = 0.0                # work of batches that failed or were skipped

    def start_batch(self, index: int) -> None:
        self._index, self._batch_start, self._batch_it = index, time.perf_counter(), 0

    def update(self, it: int) -> None:
        self._batch_it = max(self._batch_it, it)

    def end_batch(self, ran: bool = True) -> None:
        if self._index >= 0:
            w = self.batch_work[self._index] * self.iters
            if ran:
                self._done += w
            else:
                self._skipped += w
        self._index = -1

    def ms_per_iter(self) -> Optional[float]:
        """Wall-clock ms per iteration of the current batch so far."""
        if self._index < 0 or self._batch_it <= 0:
            return None
        return (time.perf_counter() - self._batch_start) * 1e3 / self._batch_it

    def eta_s(self) -> Optional[float]:
        """Seconds left for the whole job at the rate measured so far (None before any)."""
        elapsed = time.perf_counter() - self.started
        current = self.batch_work[self._index] * self._batch_it if self._index >= 0 else 0.0
        done = self._done + current
        if done <= 0 or elapsed <= 0:
            return None
        total = sum(self.batch_work) * self.iters - self._skipped
        return max(0.0, total - done) * elapsed / done


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


def tally_line(ok: int, failed: int, written_to: str) -> str:
    """``ok 4, failed 2, written to out/`` (``nothing written`` when none is ok)."""
    where = f"written to {written_to}" if ok else "nothing written"
    return f"ok {ok}, failed {failed}, {where}"


def summary_object(ok: int, failed: Sequence[str], written_to: str, seconds: float, exit_code: int) -> Dict:
    """The last JSON object of a ``--json`` run: counts, the failed images, where the outputs
    went, the wall time and the exit code."""
    return {"summary": True, "ok": ok, "failed": len(failed), "failed_images": list(failed),
            "written_to": written_to if ok else None, "seconds": round(seconds, 3), "exit_code": exit_code}
