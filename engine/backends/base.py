"""The interface every backend implements, and the phase timer used by ``stylegrad bench``."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch

from stylegrad.config import StyleConfig
from stylegrad.model.vgg import VGG
from stylegrad.terms.targets import Targets


@dataclass
class Evaluation:
    """Weighted loss terms per image (B,) and the gradient of their sum w.r.t. the image."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    grad: torch.Tensor
    # an extra pixel-space term handed to optimize() (the video temporal loss), weighted, or None
    pixel_term: Optional[torch.Tensor] = None

    @property
    def total(self) -> torch.Tensor:
        total = self.content + self.style + self.tv
        return total if self.pixel_term is None else total + self.pixel_term


# x (B, 3, H, W) -> (weighted value (B,), its gradient w.r.t. x): an extra term on the pixels
PixelTerm = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


class PhaseTimer:
    """Accumulates wall time per phase. Synchronises CUDA around each phase when enabled, so
    only use it for measurement (bench), never on the production path."""

    def __init__(self, enabled: bool = False, device: Optional[torch.device] = None):
        self.enabled = enabled
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.totals: Dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.totals[name] = self.totals.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    def reset(self) -> None:
        self.totals = {}


class Backend(ABC):
    """Turns an image into weighted losses and the image gradient.

    Subclasses that hand-write the backward implement :meth:`forward_saving` and
    :meth:`backward` and inherit :meth:`evaluate`, which puts the loss kernels in between.
    """

    name: str = "?"
    precision: str = "fp32"
    ops = None   # kernels namespace for SplitBackend; None: stylegrad.kernels

    def __init__(self, vgg: VGG, config: StyleConfig, device: torch.device):
        self.config = config.resolved(vgg.preprocess)   # concrete style weight and convention
        self.vgg = vgg.with_pixel_scale(self.config.pixel_scale)
        self.device = torch.device(device)
        self.timer = PhaseTimer()

    # -- features without anything saved (targets) -------------------------------------------
    @abstractmethod
    def features(self, image: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        ...

    def gram(self, f: torch.Tensor) -> torch.Tensor:
        from stylegrad import kernels

        return kernels.gram(f)

    # -- one evaluation ----------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, image: torch.Tensor, targets: Targets) -> Evaluation:
        ...

    def optimize(self, x0: torch.Tensor, targets: Targets, report=None, keep_image=lambda k: False,
                 iters: Optional[int] = None, pixel_term: Optional[PixelTerm] = None) -> torch.Tensor:
        """The whole optimisation loop, ``iters`` iterations (default ``config.iters``; a
        coarse-to-fine run passes each scale's). Default: PyTorch's optimisers around
        :meth:`evaluate` (see ``stylegrad.run.optimize``). A backend may run the loop its own way
        (the CUDA backend replays one CUDA graph per iteration) as long as it reports the same
        iterations.

        ``pixel_term``: ``x -> (value (B,), d value / d x)``, a weighted term on the pixels
        added to every evaluation (``stylegrad.terms.objective.add_pixel_term``; the video temporal
        loss). Eager on every backend."""
        from stylegrad.run.optimize import optimize
        from stylegrad.terms.objective import add_pixel_term

        def evaluate(img: torch.Tensor) -> Evaluation:
            ev = self.evaluate(img, targets)
            return ev if pixel_term is None else add_pixel_term(ev, img, pixel_term)

        return optimize(x0, evaluate, self.config, report, keep_image, iters)

    @property
    def terms(self):
        """The objective: this config's loss terms (``stylegrad.terms.build``), built once."""
        if getattr(self, "_terms", None) is None:
            from stylegrad import terms

            self._terms = terms.build(self.config)
        return self._terms

    def close(self) -> None:
        """Release sessions / buffers. The backend is unusable afterwards."""


class SplitBackend(Backend):
    """A backend with its own forward (saving what the backward needs) and backward.

    One evaluation: forward -> the feature terms' values and feature gradients (``objective``,
    loss kernels) -> backward -> + the pixel terms' gradients (TV).
    """

    @abstractmethod
    def forward_saving(self, image: torch.Tensor) -> "tuple[Dict[str, torch.Tensor], object]":
        """Features at the loss layers, and whatever :meth:`backward` needs."""

    @abstractmethod
    def backward(self, saved: object, feature_grads: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Gradient w.r.t. the image (N, 3, H, W) given d loss / d features per layer."""

    def evaluate(self, image: torch.Tensor, targets: Targets) -> Evaluation:
        from stylegrad.terms.objective import feature_losses_and_grads

        ops = self.ops
        if ops is None:
            from stylegrad import kernels as ops
        with self.timer.phase("forward"):
            feats, saved = self.forward_saving(image)
        with self.timer.phase("losses"):
            if feats:
                content, style, grads = feature_losses_and_grads(feats, targets, self.config, ops, self.terms)
            else:  # image too small for any loss layer
                content = style = torch.zeros(image.shape[0], device=image.device)
                grads = {}
            tv, pixel_grads = None, []      # the pixel terms of the config are reported as tv
            for term in self.terms:
                if term.kind == "pixel":
                    value, g = term.value_and_grad_pixels(image, ops)
                    tv = value if tv is None else tv + value
                    if g is not None:
                        pixel_grads.append(g)
            if tv is None:
                tv = torch.zeros(image.shape[0], device=image.device)
        with self.timer.phase("backward"):
            grad = self.backward(saved, grads) if grads else torch.zeros_like(image)
            for g in pixel_grads:
                grad = grad + g
        return Evaluation(content, style, tv, grad)
