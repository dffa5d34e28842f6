"""The one typed, frozen configuration that feeds both the Python API and the CLI.

Every default lives here. The CLI builds its argparse defaults from :class:`StyleConfig`
so the two can never disagree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import ConfigError

# Layer names follow the paper / Caffe naming (relu4_2 = ReLU after the 2nd conv of block 4).
DEFAULT_CONTENT_LAYERS: Tuple[str, ...] = ("relu4_2",)
DEFAULT_STYLE_LAYERS: Tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

OPTIMIZERS = ("lbfgs", "adam")
POOLS = ("avg", "max")
MODELS = ("vgg19", "vgg16")
BACKENDS = ("auto", "reference", "torch", "onnxruntime", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class StyleConfig:
    """Options of one stylisation run. Frozen: derive variants with :meth:`replace`.

    Loss (see README "Formulation"):
      total = content_weight * L_content + style_weight * L_style + tv_weight * L_tv
    """

    size: int = 512                      # longest side of the output, in pixels
    iters: int = 500
    optimizer: str = "lbfgs"
    lr: Optional[float] = None           # None: 1.0 for L-BFGS, 0.02 for Adam
    lbfgs_history: int = 100             # as the reference implementations (neural-style) use
    content_weight: float = 1.0
    style_weight: float = 1.0e7
    tv_weight: float = 0.0
    content_layers: Tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    content_layer_weights: Optional[Tuple[float, ...]] = None   # None: 1 each
    style_layers: Tuple[str, ...] = DEFAULT_STYLE_LAYERS
    style_layer_weights: Optional[Tuple[float, ...]] = None     # None: 1/len(style_layers) each
    style_blend_weights: Optional[Tuple[float, ...]] = None     # None: equal; normalised to sum 1
    style_scale: float = 1.0
    init: str = "content"                # "content" | "noise" | path of an image
    pool: str = "avg"
    model: str = "vgg19"
    weights: str = "imagenet"            # "imagenet" | "random[:SEED]" | path of a state_dict
    device: str = "cpu"
    backend: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    save_every: int = 0                  # 0: only the final image
    print_every: int = 1                 # report losses every N iterations (and the first and last)
    batch_size: int = 1                  # CLI: content images of one size optimised together

    def __post_init__(self) -> None:
        self.validate()

    def replace(self, **changes) -> "StyleConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.02

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

    def loss_layers(self) -> Tuple[str, ...]:
        """Layers whose loss term can be non-zero, content layers first, each once: what a
        backend's forward must produce (the objective skips the others)."""
        return tuple(dict.fromkeys(list(self.active_content_layers()) + list(self.active_style_layers())))

    def validate(self) -> None:
        from .vgg import layer_names  # local import: vgg imports nothing from config

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(isinstance(self.size, int) and self.size >= 1, f"--size must be an integer >= 1, got {self.size!r}")
        need(isinstance(self.iters, int) and self.iters >= 0, f"--iters must be an integer >= 0, got {self.iters!r}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        need(self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr!r}")
        need(self.lbfgs_history >= 1, "lbfgs_history must be >= 1")
        for name in ("content_weight", "style_weight", "tv_weight"):
            v = getattr(self, name)
            need(v >= 0 and v == v, f"--{name.replace('_', '-')} must be >= 0, got {v!r}")
        need(self.pool in POOLS, f"--pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        need(self.model in MODELS, f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        need(self.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        need(self.style_scale > 0, f"--style-scale must be > 0, got {self.style_scale!r}")
        need(self.save_every >= 0, f"--save-every must be >= 0, got {self.save_every!r}")
        need(isinstance(self.print_every, int) and self.print_every >= 1, f"--print-every must be >= 1, got {self.print_every!r}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size!r}")
        need(isinstance(self.seed, int), f"--seed must be an integer, got {self.seed!r}")
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
                need(all(w >= 0 for w in weights), f"{kind} layer weights must be >= 0")
        need(len(self.content_layers) > 0 or self.content_weight == 0,
             "no content layers given but --content-weight is not 0")
        need(len(self.style_layers) > 0 or self.style_weight == 0,
             "no style layers given but --style-weight is not 0")
        if self.style_blend_weights is not None:
            need(all(w >= 0 for w in self.style_blend_weights) and sum(self.style_blend_weights) > 0,
                 "--style-blend-weights must be >= 0 with a positive sum")
        need(isinstance(self.init, str) and self.init != "", "--init must be content, noise or an image path")
