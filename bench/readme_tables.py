"""Markdown tables for the README from committed `stylegrad bench --peers` result files.

    python bench/readme_tables.py bench/results/2026-12-06-*.json

Prints, per file, the machine, date, commit and command it records, then one row per
contestant: ms/iteration (median and the repeats' range), the speed ratio against the first
peer, seconds to the target loss and that ratio, the final loss, peak RSS. Nothing here is
typed by hand: the README's benchmark tables are this script's output.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _ratio(r: dict, prefix: str) -> str:
    for k, v in r.items():
        if k.startswith(prefix) and isinstance(v, dict):
            return f"{v['ratio']:.2f}x ({v['low']:.2f}..{v['high']:.2f})"
    return ""


def table(report: dict, name: str) -> str:
    o = report["objective"]
    target = report.get("target") or {}
    lines = [f"`{name}`: {report['cpu']}, {report['threads']} thread(s), {o['width']}x{o['height']} px, "
             f"{o['model']} {o['weights']}, {report['iterations']} iterations x {report['repeat']} repeat(s), "
             f"commit {report['commit']}, {report['date'][:10]}; gemm {report['gemm_gflops']:.0f} GFLOP/s "
             f"measured in the same run" + (f"; target loss {target['loss']:.4g} ({target['text']})" if target else ""),
             "",
             "| contestant | ms/iter (min..max) | speed vs peer | s to target loss | time-to-loss vs peer | final loss | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        ms = r.get("ms_per_iter")
        s = r.get("seconds_to_loss")
        lines.append(
            f"| {r['contestant']} | {ms:.0f} ({r['ms_per_iter_min']:.0f}..{r['ms_per_iter_max']:.0f}) | "
            f"{_ratio(r, 'speed_vs_') or '1.00x'} | "
            f"{'%.1f' % s if s else ('never' if target else '')} | {_ratio(r, 'time_to_loss_vs_') or ('1.00x' if s else '')} | "
            f"{r['final_loss']:.4g} | {r['peak_rss_mib_median']:.0f} |")
    lines += ["", "Command: `" + report["command"] + "`"]
    if report.get("warnings"):
        lines += [""] + [f"- warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def main(argv) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for p in argv:
        print(table(json.loads(Path(p).read_text()), p))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
