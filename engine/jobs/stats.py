"""Throughput of a job: images/hour and per-image seconds percentiles, from manifest records.

- images/hour = ok images / wall-clock hours. For a job read back from its manifest the wall
  clock of each run is from its ``run`` record's start to its last image (or ``end``) record;
  runs are summed, so time between runs does not count.
- Per-image seconds: a record's ``seconds`` is its batch's optimisation time, divided by the
  number of images optimised together (``batch``): the cost of one image.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional


def percentile(values: List[float], q: float) -> Optional[float]:
    """The q-th percentile (0..100) by linear interpolation between order statistics."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def per_image_seconds(records: Iterable[dict]) -> List[float]:
    out = []
    for r in records:
        if r.get("status") == "ok" and isinstance(r.get("seconds"), (int, float)):
            out.append(float(r["seconds"]) / max(1, int(r.get("batch") or 1)))
    return out


def seconds_percentiles(records: Iterable[dict]) -> Dict[str, Optional[float]]:
    s = per_image_seconds(records)
    return {"p50": _round(percentile(s, 50)), "p90": _round(percentile(s, 90)),
            "p99": _round(percentile(s, 99)), "max": _round(max(s) if s else None)}


def images_per_hour(ok: int, seconds: float) -> Optional[float]:
    return round(ok * 3600.0 / seconds, 2) if seconds > 0 and ok > 0 else (0.0 if seconds > 0 else None)


def run_wall_seconds(runs: List[dict], images: List[dict], ends: Dict[str, dict]) -> float:
    """Sum over runs of (last record of the run - run start)."""
    last: Dict[str, float] = {}
    for r in images:
        t = r.get("finished")
        if isinstance(t, (int, float)):
            rid = str(r.get("run"))
            last[rid] = max(last.get(rid, t), t)
    total = 0.0
    for run in runs:
        rid, t0 = str(run.get("run")), run.get("started")
        t1 = (ends.get(rid) or {}).get("finished", last.get(rid))
        if isinstance(t0, (int, float)) and isinstance(t1, (int, float)) and t1 > t0:
            total += t1 - t0
    return total


def _round(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x, 3)
