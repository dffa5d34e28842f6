"""What a loss term is: :class:`Term`, the one home of everything the engine needs to know about it.

A term names itself and the :class:`~stylegrad.config.StyleConfig` fields it reads, the layers it
reads (feature terms) or that it reads the pixels (pixel terms), how it prepares its targets from
the inputs (once per output size, cached by ``stylegrad.terms.targets.TargetBuilder``), its weighted
value and gradient, a plain differentiable torch form for the autograd ``reference`` backend, and
its FLOPs per iteration. Every backend, the hand-written backward, the CUDA loop, progress lines
and the bench iterate over the list :func:`stylegrad.terms.build` makes from a config.

``column`` is the loss column a term's value is reported in (``content``, ``style``, ``tv`` or
``pixel``): the progress lines, the history buffer of the CUDA loop and :class:`Evaluation` keep
those four columns whatever the terms are.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

from stylegrad.config import StyleConfig

# (B, C, H, W) feature of a layer, possibly wrapped for --normalize-gradients: reference backend
FeatureOf = Callable[[str, float], torch.Tensor]


class Term:
    """One weighted loss term. Subclasses set the class attributes and override the methods of
    their kind (``feature`` terms: :meth:`value_and_grad`; ``pixel`` terms:
    :meth:`value_and_grad_pixels`)."""

    name: str = "?"
    column: str = "?"                  # content | style | tv | pixel
    kind: str = "feature"              # feature (reads VGG features) | pixel (reads the image)
    config_fields: Tuple[str, ...] = ()
    # the ``stylegrad.kernels`` operations its fast path launches; none: eager torch everywhere
    kernel_ops: Tuple[str, ...] = ()
    replaces: Optional[str] = None     # the name of the term it takes the place of, if any
    path_note: str = ""                # what ``stylegrad info`` adds to how the cuda backend runs it

    @classmethod
    def applies(cls, config: StyleConfig) -> bool:
        """Whether ``config``'s objective has this term (``stylegrad.terms.build``)."""
        return True

    @classmethod
    def check_inputs(cls, config: StyleConfig, content_hws, style_hws) -> None:
        """Checks of its inputs that need no weights, run before any work: content images and
        styles as (height, width). Raise ConfigError / ImageError."""

    def __init__(self, config: StyleConfig):
        self.config = config

    def layers(self) -> Dict[str, float]:
        """Layers it reads with their weights (empty for pixel terms)."""
        return {}

    @property
    def active(self) -> bool:
        """False when it can contribute nothing (weight 0): the objective skips it."""
        return bool(self.layers()) if self.kind == "feature" else True

    # -- targets --------------------------------------------------------------------------------
    def prepare(self, builder, content: torch.Tensor, positions: Dict[str, int], styles_per_image=None):
        """Its targets for the batch ``content`` (B, 3, H, W), or None when it keeps them in
        ``Targets.content`` / ``Targets.style``. ``builder``: the TargetBuilder (features,
        Gram matrices and the scaled style images of its backend). Cached by the builder's own
        per-size caches where the term uses them."""
        return None

    # -- the fast path (kernels) ---------------------------------------------------------------
    def value_and_grad(self, feats: Dict[str, torch.Tensor], targets, ops
                       ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Weighted value (B,) and d value / d feature per layer it reads (layers absent from
        ``feats``, an image too small for them, contribute nothing). ``ops``: the kernels."""
        raise NotImplementedError(f"term {self.name} has no feature gradient")

    def value_and_grad_pixels(self, image: torch.Tensor, ops) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Pixel terms: weighted value (B,) and d value / d image (None: nothing to add)."""
        raise NotImplementedError(f"term {self.name} is not a pixel term")

    # -- the autograd reference --------------------------------------------------------------
    def reference_value(self, feature: FeatureOf, feats: Dict[str, torch.Tensor], image: torch.Tensor,
                        targets) -> Optional[torch.Tensor]:
        """Weighted value (B,) in plain differentiable torch (``stylegrad.terms.losses``), or None
        when it adds nothing. ``feature(layer, weight)`` is the layer's feature (wrapped for
        --normalize-gradients)."""
        raise NotImplementedError(f"term {self.name} has no reference form")

    # -- cost ----------------------------------------------------------------------------------
    def flops(self, layer_shapes: Dict[str, Tuple[int, int]], batch: int = 1, gram_symmetric: bool = False) -> float:
        """FLOPs per iteration beyond the network (multiply-add = 2), from ``layer_shapes``:
        layer -> (channels N, positions M). Elementwise work counts 0 (stylegrad.terms.flops)."""
        return 0.0

    @classmethod
    def describe_path(cls, cuda_backend: bool) -> str:
        """What runs it (``stylegrad info``): on the cuda backend its kernels inside the CUDA
        graph, elsewhere the same operations from ``stylegrad.kernels.torch_ops``; a term
        without kernels runs eagerly in torch."""
        ops = ", ".join(cls.kernel_ops)
        if not ops:
            path = "eager torch"
        elif cuda_backend:
            path = f"CUDA kernels ({ops}) in the CUDA graph"
        else:
            path = f"eager torch (stylegrad.kernels.torch_ops: {ops})"
        return path + (f"; {cls.path_note}" if cls.path_note and cuda_backend else "")
