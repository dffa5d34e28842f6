"""The ``stylegrad`` command. The only module that prints or exits.

Exit codes: 0 success; 1 some image failed (the others are still written) or a runtime error;
2 usage error or bad input found before any work; 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .config import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, StyleConfig
from .errors import StyleGradError

_D = StyleConfig.__dataclass_fields__  # defaults come from the one config


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + line)
        raise UsageError(message)


def _default(name: str):
    return _D[name].default


def _csv(text: str) -> tuple:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _floats(text: str) -> tuple:
    try:
        return tuple(float(p) for p in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _layers_with_weights(text: str):
    """"relu1_1,relu2_1" or "relu1_1:0.5,relu2_1:0.5" -> (layers, weights or None)."""
    names, weights = [], []
    for part in _csv(text):
        name, sep, w = part.partition(":")
        names.append(name)
        if sep:
            try:
                weights.append(float(w))
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad layer weight in {part!r}") from None
    if weights and len(weights) != len(names):
        raise argparse.ArgumentTypeError("give a weight for every layer or for none (relu1_1:0.2,relu2_1:0.8)")
    return tuple(names), (tuple(weights) if weights else None)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stylegrad", description="Optimisation-based neural style transfer (Gatys et al.).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("stylize", help="stylise content images with one or more style images")
    s.add_argument("content", nargs="+", metavar="CONTENT", help="content images (or folders of images)")
    s.add_argument("--style", action="append", required=True, metavar="S", help="style image (repeat to blend)")
    out = s.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="OUT", help="output file (one content image)")
    out.add_argument("--out-dir", metavar="DIR", help="output folder (CONTENT_stem.png each)")
    s.add_argument("--ext", default="png", help="output extension with --out-dir (default png)")
    s.add_argument("--size", type=int, default=_default("size"), help="longest side in pixels (default %(default)s)")
    s.add_argument("--iters", type=int, default=_default("iters"), help="iterations (default %(default)s)")
    s.add_argument("--optimizer", choices=["lbfgs", "adam"], default=_default("optimizer"))
    s.add_argument("--lr", type=float, default=None, help="step size (default 1.0 for lbfgs, 0.02 for adam)")
    s.add_argument("--content-weight", type=float, default=_default("content_weight"), help="(default %(default)g)")
    s.add_argument("--style-weight", type=float, default=_default("style_weight"), help="(default %(default)g)")
    s.add_argument("--tv-weight", type=float, default=_default("tv_weight"), help="(default %(default)g)")
    s.add_argument("--style-blend-weights", type=_floats, default=None, metavar="W1,W2,...")
    s.add_argument("--style-scale", type=float, default=_default("style_scale"))
    s.add_argument("--init", default=_default("init"), help="content | noise | PATH (default %(default)s)")
    s.add_argument("--pool", choices=["avg", "max"], default=_default("pool"))
    s.add_argument("--model", choices=["vgg19", "vgg16"], default=_default("model"))
    s.add_argument("--content-layers", type=_layers_with_weights, default=(DEFAULT_CONTENT_LAYERS, None),
                   metavar="L[:W],...", help="default " + ",".join(DEFAULT_CONTENT_LAYERS))
    s.add_argument("--style-layers", type=_layers_with_weights, default=(DEFAULT_STYLE_LAYERS, None),
                   metavar="L[:W],...", help="default " + ",".join(DEFAULT_STYLE_LAYERS) + ", weight 1/n each")
    s.add_argument("--weights", default=_default("weights"), help="imagenet | random[:SEED] | PATH (default %(default)s)")
    s.add_argument("--device", default=_default("device"), help="cpu | cuda[:N] (default %(default)s)")
    s.add_argument("--backend", default=_default("backend"), choices=["auto", "reference", "torch", "onnxruntime", "cuda"])
    s.add_argument("--precision", default=_default("precision"), choices=["fp32", "tf32", "bf16"])
    s.add_argument("--seed", type=int, default=_default("seed"))
    s.add_argument("--save-every", type=int, default=_default("save_every"), metavar="N",
                   help="also write OUT_stem.iterNNNN.ext every N iterations")
    s.add_argument("--print-every", type=int, default=None, metavar="N",
                   help="report the loss every N iterations (default 1 with --json, else 10)")
    s.add_argument("--batch-size", type=int, default=_default("batch_size"), metavar="B",
                   help="optimise up to B content images of one size together (default %(default)s)")
    s.add_argument("--pair-styles", action="store_true",
                   help="content image i takes style image i (as many --style as content images)")
    s.add_argument("--json", action="store_true", help="one JSON object per reported iteration on stdout")
    s.add_argument("--quiet", action="store_true", help="no progress bar or notes")

    i = sub.add_parser("info", help="devices, ONNX Runtime providers, TensorRT/cuda-python, weights cache")
    i.add_argument("--json", action="store_true")

    e = sub.add_parser("export", help="export VGG forward/backward graphs to ONNX")
    e.add_argument("--model", choices=["vgg19", "vgg16"], default=_default("model"))
    e.add_argument("--weights", default=_default("weights"))
    e.add_argument("--pool", choices=["avg", "max"], default=_default("pool"))
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--content-layers", type=_layers_with_weights, default=(DEFAULT_CONTENT_LAYERS, None))
    e.add_argument("--style-layers", type=_layers_with_weights, default=(DEFAULT_STYLE_LAYERS, None))
    e.add_argument("--opset", type=int, default=17)

    b = sub.add_parser("bench", help="time backends against the autograd reference")
    b.add_argument("--backends", type=_csv, default=("reference", "torch", "onnxruntime"))
    b.add_argument("--size", type=_csv, default=("256",), help="comma-separated sizes")
    b.add_argument("--batch", type=_csv, default=("1",), help="comma-separated batch sizes")
    b.add_argument("--iters", type=int, default=20)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--warmup", type=int, default=3, help="warm-up iterations per backend (excluded)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--precision", type=_csv, default=("fp32",))
    b.add_argument("--content", default=None)
    b.add_argument("--style", default=None)
    b.add_argument("--weights", default="random")
    b.add_argument("--model", choices=["vgg19", "vgg16"], default="vgg19")
    b.add_argument("--json", action="store_true")
    b.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE (atomically)")
    b.add_argument("--out-dir", default=None, metavar="DIR",
                   help="also write one JSON file per (size, batch) into DIR (atomically)")

    k = sub.add_parser("kernels", help="CUDA kernel tools")
    ksub = k.add_subparsers(dest="kernels_command", metavar="SUBCOMMAND", parser_class=_Parser)
    kc = ksub.add_parser("check", help="compile every kernel with NVRTC, or run them in the CPU emulator (no GPU)")
    kc.add_argument("--arch", type=_csv, default=("sm_80", "sm_90"))
    kc.add_argument("--emulate", action="store_true",
                    help="run every kernel entry point on the CPU (g++ emulator) against its float64 reference")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a command is needed: stylize, info, export, bench or kernels check (see --help)")
        if args.command == "stylize":
            from .cli_stylize import cmd_stylize
            return cmd_stylize(args)
        if args.command == "info":
            from .cli_info import cmd_info
            return cmd_info(args)
        if args.command == "export":
            from .cli_tools import cmd_export
            return cmd_export(args)
        if args.command == "bench":
            from .cli_tools import cmd_bench
            return cmd_bench(args)
        if args.command == "kernels":
            if args.kernels_command != "check":
                raise UsageError("usage: stylegrad kernels check [--arch sm_80,sm_90 | --emulate]")
            from .cli_tools import cmd_kernels_check
            return cmd_kernels_check(args)
        raise UsageError(f"unknown command {args.command}")
    except UsageError as e:
        print(f"stylegrad: error: {e}", file=sys.stderr)
        return 2
    except StyleGradError as e:
        print(f"stylegrad: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stylegrad: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # never a traceback for users; STYLEGRAD_DEBUG=1 shows it
        if os.environ.get("STYLEGRAD_DEBUG") == "1":
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"stylegrad: internal error: {type(e).__name__}: {msg} (set STYLEGRAD_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
