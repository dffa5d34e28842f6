"""Run one contestant of ``stylegrad bench --peers`` in this process and record what it did.

``python -m stylegrad.benchmark.peer neural-style-pt --out RECORD.json -- -content_image ... -print_iter 1``
runs PyPI ``neural-style`` (neural-style-pt 0.5.7) with exactly the flags after ``--``;
``python -m stylegrad.benchmark.peer stylegrad --backend torch --precision fp32 -- <the same flags>``
runs stylegrad on the objective those flags define (``stylegrad.cli.neural_style_flags``), with its own
optimiser (``--lbfgs-rules``, default safeguarded). Either writes one JSON record: the loss at
every iteration with the wall time since its first loss (the initial image's), the seconds
before that first loss, this process's peak RSS, versions, and the threads torch used;
stylegrad's also the time per phase. One process per run, so the peak RSS is the contestant's
own; the tests compare losses through it.

neural-style-pt imports ``torchvision.transforms`` for image loading only (Resize, ToTensor,
Lambda, Normalize, Compose, ToPILImage). torchvision cannot be installed next to our CPU torch
here, so when it is missing this module provides those six as a small stand-in with
torchvision's semantics for what neural-style-pt calls: PIL bilinear resizing to an (H, W)
tuple, ``/ 255`` to float CHW, per-channel ``(x - mean) / std``, and ``x * 255`` truncated to
bytes back to PIL. With torchvision installed, torchvision itself is used.

This is a command (it prints its record and exits); library code does not import it.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import resource
import sys
import time
import types
from pathlib import Path
from typing import List, Optional, Sequence

PEERS = ("neural-style-pt", "stylegrad")


def torchvision_stand_in() -> types.ModuleType:
    """A ``torchvision`` module with the ``transforms`` neural-style-pt uses."""
    import numpy as np
    import torch
    from PIL import Image

    tr = types.ModuleType("torchvision.transforms")

    class Compose:
        def __init__(self, steps):
            self.steps = list(steps)

        def __call__(self, x):
            for f in self.steps:
                x = f(x)
            return x

    class Resize:
        def __init__(self, size):
            if not (isinstance(size, (tuple, list)) and len(size) == 2):
                raise NotImplementedError("this stand-in resizes to an (H, W) tuple only")
            self.size = (int(size[0]), int(size[1]))

        def __call__(self, img):
            h, w = self.size
            return img.resize((w, h), Image.BILINEAR)

    class ToTensor:
        def __call__(self, img):
            a = np.asarray(img.convert("RGB"), dtype=np.uint8)
            return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous().float().div(255)

    class Lambda:
        def __init__(self, f):
            self.f = f

        def __call__(self, x):
            return self.f(x)

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, t):
            mean = torch.as_tensor(self.mean, dtype=t.dtype).view(-1, 1, 1)
            std = torch.as_tensor(self.std, dtype=t.dtype).view(-1, 1, 1)
            return (t - mean) / std

    class ToPILImage:
        def __call__(self, t):
            a = t.mul(255).byte().permute(1, 2, 0).numpy()
            return Image.fromarray(a, mode="RGB")

    for cls in (Compose, Resize, ToTensor, Lambda, Normalize, ToPILImage):
        setattr(tr, cls.__name__, cls)
    tv = types.ModuleType("torchvision")
    tv.transforms = tr
    tv.__version__ = "stand-in"
    return tv


def ensure_torchvision() -> str:
    """'torchvision X' when installed, else installs the stand-in and says so."""
    try:
        import torchvision  # noqa: F401
        return f"torchvision {torchvision.__version__}"
    except Exception:
        tv = torchvision_stand_in()
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.transforms"] = tv.transforms
        return "stylegrad's torchvision.transforms stand-in"


class _TimedLines(io.TextIOBase):
    """stdout that notes the time at which each line was written."""

    def __init__(self, echo: bool):
        self.lines: List[tuple] = []
        self._part = ""
        self._echo = echo

    def write(self, s: str) -> int:
        now = time.perf_counter()
        self._part += s
        while "\n" in self._part:
            line, self._part = self._part.split("\n", 1)
            self.lines.append((now, line))
            if self._echo:
                sys.__stderr__.write(line + "\n")
        return len(s)


_ITER = re.compile(r"^Iteration (\d+) / (\d+)$")
_TOTAL = re.compile(r"^\s+Total loss: (\S+)$")


def parse_iterations(lines: Sequence[tuple]) -> List[dict]:
    """[(time, line)] of neural-style-pt's output -> [{"iter", "loss", "t"}]: its iteration t is
    reported as ``iter`` t - 1 (the image after t - 1 updates, stylegrad's numbering) and ``t``
    seconds since its first loss line."""
    out, current, t0 = [], None, None
    for when, line in lines:
        m = _ITER.match(line)
        if m:
            current = int(m.group(1))
            continue
        m = _TOTAL.match(line)
        if m and current is not None:
            t0 = when if t0 is None else t0
            out.append({"iter": current - 1, "loss": float(m.group(1)), "t": when - t0})
            current = None
    return out


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024   # Linux: KiB


def run_neural_style_pt(flags: Sequence[str], echo: bool = False) -> dict:
    import torch

    loader = ensure_torchvision()
    from importlib import metadata

    version = metadata.version("neural-style")
    sys.argv = ["neural-style"] + list(flags)
    out = _TimedLines(echo)
    saved, sys.stdout = sys.stdout, out
    t_start = time.perf_counter()
    try:
        from neural_style import neural_style as ns_pt    # parses sys.argv at import
        ns_pt.main()
    finally:
        sys.stdout = saved
    iters = parse_iterations(out.lines)
    first = next((w for w, line in out.lines if _TOTAL.match(line)), None)
    return {"peer": "neural-style-pt", "version": version, "image_loading": loader, "flags": list(flags),
            "threads": torch.get_num_threads(), "iterations": iters,
            "setup_s": (first - t_start) if first is not None else None,
            "peak_rss_bytes": peak_rss_bytes()}


def run_stylegrad(flags: Sequence[str], backend: str, precision: str, lbfgs_rules: str,
                  options: Sequence[str] = ()) -> dict:
    """stylegrad on the objective of neural-style flags (weights, images, size, losses, init,
    iterations), with ``backend``, ``precision`` and ``lbfgs_rules``. The phase timer runs
    during the measured run (on the CPU it only reads the clock around each phase)."""
    import torch

    from stylegrad.backends.base import PhaseTimer
    from stylegrad.cli import neural_style_flags as ns
    from stylegrad.errors import StyleGradError
    from stylegrad.io import images as imgs
    from stylegrad.model.weights import load_vgg
    from stylegrad.run.stylizer import Stylizer

    t_start = time.perf_counter()
    args = ns.parse(list(flags))
    content = imgs.load_image(args.content_image)
    model, weights, preprocess, _ = ns.model_and_weights(str(args.model_file), "model_file" in args.given)
    vgg = load_vgg(weights, model, str(args.pooling), preprocess=preprocess)
    tr = ns.translate(args, vgg.preprocess, tuple(content.shape[-2:]), torch.cuda.is_available())
    iters = int(args.num_iterations) - 1    # their N evaluations = our N - 1 updates (+ the initial image)
    from stylegrad.benchmark.contest import option_value
    extra = {}
    for item in options:                    # FIELD=VALUE: options that leave the objective alone
        k, _, v = item.partition("=")
        extra[k] = option_value(k, v)
    # a contestant's own options (torch+lbfgs_rules=torch) override the run-wide ones
    base = {"backend": backend, "precision": precision, "lbfgs_rules": lbfgs_rules}
    base.update(extra)
    lbfgs_rules = base["lbfgs_rules"]
    cfg = tr.config.replace(iters=max(1, iters), save_every=0, print_every=1, **base)
    st = Stylizer(cfg, vgg=vgg)
    points: List[dict] = []
    status = "ok"
    try:
        st.set_styles([imgs.load_image(p) for p in tr.styles])
        st.backend.timer = PhaseTimer(enabled=True, device=st.device)
        first: List[float] = []

        def record(p) -> None:
            now = time.perf_counter()
            if not first:
                first.append(now)
                st.backend.timer.reset()       # phases of the iterations after the first loss
            points.append({"iter": p.iter, "loss": p.loss, "t": now - first[0]})
        try:
            st.run(content, callback=record, last_finite=True)
        except StyleGradError as e:            # stalled: the losses so far are still the record
            status = f"error: {e}"
        n = max(1, len(points) - 1)
        phases = {k: v / n for k, v in st.backend.timer.totals.items()}
        name = st.backend.name
        precision = st.config.precision        # --precision auto: what ran
    finally:
        st.close()
    return {"peer": "stylegrad", "backend": name, "precision": precision, "lbfgs_rules": lbfgs_rules,
            "options": list(options),
            "version": _stylegrad_version(), "flags": list(flags), "threads": torch.get_num_threads(),
            "iterations": points, "phases_ms_per_iter": phases, "status": status,
            "setup_s": (first[0] - t_start) if first else None, "peak_rss_bytes": peak_rss_bytes()}


def _stylegrad_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("stylegrad")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, flags = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m stylegrad.benchmark.peer", description=__doc__.split("\n\n")[0])
    p.add_argument("peer", choices=PEERS)
    p.add_argument("--out", help="write the record here (JSON); default stdout")
    p.add_argument("--threads", type=int, help="torch.set_num_threads before the peer starts")
    p.add_argument("--echo", action="store_true", help="copy the peer's output to stderr")
    p.add_argument("--backend", default="auto", help="stylegrad: the backend")
    p.add_argument("--precision", default="fp32", help="stylegrad: the precision")
    p.add_argument("--lbfgs-rules", default="safeguarded", help="stylegrad: L-BFGS rules (safeguarded | torch)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="stylegrad: a StyleConfig field that leaves the objective alone (repeatable)")
    args = p.parse_args(argv)
    if args.peer == "neural-style-pt":
        try:
            import neural_style  # noqa: F401
        except ImportError:
            print("stylegrad: error: neural-style-pt is not installed: pip install --no-deps neural-style==0.5.7 "
                  "(--no-deps: its torchvision requirement would replace this torch)", file=sys.stderr)
            return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        if args.peer == "stylegrad":
            from stylegrad.errors import StyleGradError
            try:
                record = run_stylegrad(flags, args.backend, args.precision, args.lbfgs_rules, args.set)
            except StyleGradError as e:
                print(f"stylegrad: error: {e}", file=sys.stderr)
                return 2
        else:
            record = run_neural_style_pt(flags, args.echo)
    except SystemExit as e:     # its argparse: a bad flag
        print(f"stylegrad: error: {args.peer} refused its flags (exit {e.code})", file=sys.stderr)
        return 2
    text = json.dumps(record)
    if args.out:
        from stylegrad.io.fileio import atomic_write
        atomic_write(Path(args.out), lambda f: f.write(text.encode()))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
