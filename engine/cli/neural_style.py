"""``stylegrad neural-style``: jcjohnson/neural-style's flags (``stylegrad.cli.neural_style_flags``), run by
``stylegrad stylize``'s machinery (a plan of one image, ``stylegrad.cli.plan``), with one printed note of where the meaning differs."""
from __future__ import annotations

import sys
from typing import Sequence

import torch

from stylegrad.cli import neural_style_flags as ns
from stylegrad.cli.plan import expand_contents, single_image_plan
from stylegrad.cli.stylize import run_plan
from stylegrad.errors import StyleGradError
from stylegrad.io import images as imgs
from stylegrad.model.weights import load_vgg

USAGE = """usage: stylegrad neural-style -content_image C -style_image S1[,S2...] [-output_image out.png] [flags]

jcjohnson/neural-style's (and neural-style-pt's) command line, mapped to stylegrad's options; a note
printed at the start says where defaults and loss normalisation differ and how the weights map.
Flags (neural-style's defaults):
"""


def usage() -> str:
    lines = [USAGE]
    for name, (kind, default) in ns.FLAGS.items():
        shown = "" if kind == "flag" else (" VALUE" + (f" (default {default})" if default is not None else " (required)"))
        lines.append(f"  -{name}{shown}")
    lines.append("Refused, with the nearest equivalent: " + ", ".join("-" + n for n in ns.UNSUPPORTED))
    lines.append("Spatial control with region masks (stylegrad stylize --content-mask / --style-mask): "
                 "neural-style-pt has no equivalent, so this command has none.")
    return "\n".join(lines)


def cmd_neural_style(argv: Sequence[str]) -> int:
    """Run their command line; every error and hint names their flags (``ns.in_their_flags``)."""
    try:
        return _neural_style(list(argv))
    except StyleGradError as e:
        raise type(e)(ns.in_their_flags(str(e))) if _retypeable(e) else StyleGradError(ns.in_their_flags(str(e))) from None


def _retypeable(e: StyleGradError) -> bool:
    try:
        type(e)("")
    except TypeError:
        return False
    return True


def _neural_style(argv) -> int:
    if any(a in ("-h", "-help", "--help") for a in argv):
        print(usage())
        return 0
    args = ns.parse(argv)
    content = imgs.load_image(args.content_image)        # a bad path: one line, exit 2, before any work
    size = (int(content.shape[-2]), int(content.shape[-1]))
    ns.translate(args, "caffe", size)                    # every flag checked before the weights load
    model, weights, preprocess, _ = ns.model_and_weights(str(args.model_file), "model_file" in args.given)
    vgg = load_vgg(weights, model, str(args.pooling), preprocess=preprocess)
    tr = ns.translate(args, vgg.preprocess, size, torch.cuda.is_available())
    print("stylegrad neural-style: where neural-style's defaults and normalisation differ from ours, and what "
          "this run uses:", file=sys.stderr)
    for note in tr.notes:
        print(f"  {note}", file=sys.stderr)
    styles = [str(p) for p in expand_contents([str(s) for s in tr.styles])]
    # -print_iter also paces the plain progress lines, as --print-every does when given
    plan = single_image_plan(tr.config, tr.content, styles, tr.output, print_every_given="print_iter" in args.given,
                             hints=ns.in_their_flags,
                             overwrite_remedy="remove it, or give -save_iter 0 for no snapshots")
    return run_plan(plan, vgg=vgg, on_iteration=iteration_printer(int(args.print_iter), int(args.num_iterations)))


def iteration_printer(print_iter: int, iterations: int):
    """neural-style-pt's loss lines on stdout: its iteration t is its t-th evaluation, the loss
    of the image after t - 1 updates (its first is the initial image's), printed when t is a
    multiple of -print_iter (never when it is 0). Our iteration k is the image after k updates:
    their t = k + 1, up to t = -num_iterations."""
    def on_progress(p) -> None:
        t = p.iter + 1
        if print_iter <= 0 or t > iterations or t % print_iter:
            return
        print(f"Iteration {t} / {iterations}")
        print(f"  Content loss: {p.content}")
        print(f"  Style loss: {p.style}")
        if p.tv:
            print(f"  TV loss: {p.tv}")
        print(f"  Total loss: {p.loss}", flush=True)
    return on_progress
