"""The Python API: :class:`Stylizer` (reusable) and :func:`stylize` (one call)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from . import images as imgs
from .backends import create_backend, resolve_backend
from .backends.base import Backend, Evaluation
from .config import StyleConfig
from .errors import ConfigError, ImageError
from .targets import TargetBuilder, Targets
from .vgg import VGG
from .weights import DownloadProgress, load_vgg, parse_weights


@dataclass(frozen=True)
class Progress:
    """One iteration, as reported to callbacks. Losses are the weighted terms; loss = their sum.

    ``iter`` k is the image after k updates (0: the initial image). ``snapshot`` holds the
    current image (3, H, W) at ``save_every`` points and at the last iteration, else None.
    """

    image: str
    iter: int
    iters: int
    loss: float
    content: float
    style: float
    tv: float
    ms: float
    snapshot: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)


ProgressCallback = Callable[[Progress], None]


@dataclass
class StyleResult:
    image: torch.Tensor            # (3, H, W) float32 in [0, 1], CPU
    history: List[Progress]
    seconds: float
    backend: str

    @property
    def final_loss(self) -> float:
        return self.history[-1].loss


def parse_device(spec: str) -> torch.device:
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {spec!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {spec!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


class Stylizer:
    """Reusable stylisation engine: weights, backend and style targets are built once.

    >>> s = Stylizer(StyleConfig(size=256, weights="random"))
    >>> result = s.run("photo.jpg", ["painting.jpg"])           # doctest: +SKIP
    """

    def __init__(self, config: Optional[StyleConfig] = None, *, vgg: Optional[VGG] = None,
                 download_progress: Optional[DownloadProgress] = None):
        self.config = config or StyleConfig()
        self.device = parse_device(self.config.device)
        # before the weights load (maybe a download): a combination no backend runs fails now
        backend = resolve_backend(self.config.backend, self.device, self.config.precision)
        self.vgg = (vgg or load_vgg(self.config.weights, self.config.model, self.config.pool,
                                    download_progress)).with_pool(self.config.pool)
        self.backend: Backend = create_backend(backend, self.vgg, self.config, self.device)
        self.targets = TargetBuilder(self.backend, self.config, self.device)

    @property
    def weights_are_random(self) -> bool:
        return parse_weights(self.config.weights).is_random

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def close(self) -> None:
        self.backend.close()

    # -- styles and targets ------------------------------------------------------------------
    def set_styles(self, styles: Sequence[imgs.ImageLike]) -> None:
        """The style images every run uses unless it is given its own (targets cached per size)."""
        self.targets.set_styles(styles)

    def prepare(self, content: torch.Tensor,
                styles_per_image: Optional[Sequence[Sequence[imgs.ImageLike]]] = None) -> Tuple[torch.Tensor, Targets]:
        """Resize a batch (B, 3, H, W) or image (3, H, W) and build its targets: shared style
        targets (set_styles), or one blend per image (``styles_per_image``: B lists)."""
        if content.ndim == 3:
            content = imgs.resize_longest(content, self.config.size)[None]
        content = content.to(self.device)
        return content, self.targets.build(content, styles_per_image)

    def initial_image(self, content: torch.Tensor) -> torch.Tensor:
        init = self.config.init
        if init == "content":
            return content.clone()
        if init == "noise":
            # one noise image, the same for every image of a batch: what each would get alone
            g = torch.Generator().manual_seed(self.config.seed)
            noise = torch.rand((1,) + tuple(content.shape[1:]), generator=g)
            return noise.expand_as(content).contiguous().to(self.device)
        t = imgs.resize(imgs.load_image(init), content.shape[-2], content.shape[-1])
        return t[None].expand_as(content).contiguous().to(self.device)

    def run(self, content: imgs.ImageLike, styles: Optional[Sequence[imgs.ImageLike]] = None,
            callback: Optional[ProgressCallback] = None, name: str = "image") -> StyleResult:
        """Stylise one content image; returns the image and the loss history."""
        if styles is not None:
            self.set_styles(styles)
        return self.run_batch([content], callback=callback, names=[name])[0]

    def run_batch(self, contents: Sequence[imgs.ImageLike], callback: Optional[ProgressCallback] = None,
                  names: Optional[Sequence[str]] = None,
                  styles: Optional[Sequence[Sequence[imgs.ImageLike]]] = None) -> List[StyleResult]:
        """Optimise several content images of one size together.

        ``styles``: one list of style images per content image (per-image targets); default,
        the styles of :meth:`set_styles` for all. The CPU backends optimise the batch as one
        problem (with L-BFGS one shared curvature history); the ``cuda`` backend runs one
        L-BFGS per image. Losses are reported per image.
        """
        cfg = self.config
        tensors = [imgs.resize_longest(imgs.to_tensor(c), cfg.size) for c in contents]
        if len({tuple(t.shape) for t in tensors}) != 1:
            raise ImageError("images of a batch must have the same size after resizing")
        names = list(names) if names is not None else [f"image{i}" for i in range(len(tensors))]
        t_start = time.perf_counter()
        content, targets = self.prepare(torch.stack(tensors), styles)
        x0 = self.initial_image(content)
        histories: List[List[Progress]] = [[] for _ in tensors]

        def keep(i: int) -> bool:
            return cfg.save_every > 0 and i > 0 and i % cfg.save_every == 0

        def report(i: int, ev: Evaluation, ms: float, x: Optional[torch.Tensor]) -> None:
            if i % cfg.print_every != 0 and i != cfg.iters and x is None:
                return
            c, s, t = ev.content.tolist(), ev.style.tolist(), ev.tv.tolist()
            for b in range(len(tensors)):
                snap = x[b].clamp(0, 1).cpu() if x is not None else None
                p = Progress(names[b], i, cfg.iters, c[b] + s[b] + t[b], c[b], s[b], t[b], ms, snap)
                # the history keeps no snapshots: at 4K with --save-every they would add up to GBs
                histories[b].append(dataclasses.replace(p, snapshot=None) if snap is not None else p)
                if callback is not None:
                    callback(p)

        x = self.backend.optimize(x0, targets, report, keep)
        seconds = time.perf_counter() - t_start
        out = x.clamp(0, 1).cpu()
        return [StyleResult(out[b], histories[b], seconds, self.backend.name) for b in range(len(tensors))]

    def stylize(self, content: imgs.ImageLike, styles: Optional[Sequence[imgs.ImageLike]] = None,
                callback: Optional[ProgressCallback] = None):
        """Like :meth:`run`, returning just the image in the content's type (PIL, numpy or tensor)."""
        result = self.run(content, styles, callback)
        return _like(content, result.image)


def _like(original, image: torch.Tensor):
    if isinstance(original, Image.Image):
        return imgs.tensor_to_pil(image)
    if isinstance(original, np.ndarray):
        a = image.permute(1, 2, 0).numpy()
        return (a * 255.0 + 0.5).astype(np.uint8) if original.dtype == np.uint8 else a.astype(np.float32)
    if isinstance(original, torch.Tensor):
        return image if original.ndim == 3 else image[None]
    return imgs.tensor_to_pil(image)


def stylize(content: imgs.ImageLike, style: Union[imgs.ImageLike, Sequence[imgs.ImageLike]],
            callback: Optional[ProgressCallback] = None, **overrides):
    """One-call API: ``stylize(photo, painting, size=256, iters=200)``.

    ``style`` is one image or a list; options are :class:`StyleConfig` fields.
    """
    config = StyleConfig().replace(**overrides)
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    s = Stylizer(config)
    try:
        return s.stylize(content, styles, callback)
    finally:
        s.close()
