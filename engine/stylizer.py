"""The Python API: :class:`Stylizer` (reusable) and :func:`stylize` (one call)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from . import images as imgs
from .backends import create_backend, resolve_backend
from .backends.base import Backend, Evaluation
from .config import StyleConfig
from .errors import ConfigError, ImageError
from .targets import Targets, content_targets, style_targets
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
        self._styles: Optional[List[torch.Tensor]] = None
        self._style_cache: Dict[Tuple[int, int], Dict[str, torch.Tensor]] = {}

    @property
    def weights_are_random(self) -> bool:
        return parse_weights(self.config.weights).is_random

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def close(self) -> None:
        self.backend.close()

    # -- styles --------------------------------------------------------------------------------
    def set_styles(self, styles: Sequence[imgs.ImageLike]) -> None:
        if not styles:
            raise ConfigError("at least one style image is needed (--style)")
        bw = self.config.style_blend_weights
        if bw is not None and len(bw) != len(styles):
            raise ConfigError(f"{len(bw)} --style-blend-weights for {len(styles)} style image(s)")
        self._styles = [imgs.to_tensor(s) for s in styles]
        self._style_cache.clear()

    def _style_targets(self, h: int, w: int, positions: Dict[str, int],
                       styles: Optional[List[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Blended Gram targets for an output of h x w: of the styles set with set_styles()
        (cached per size), or of ``styles`` (not cached)."""
        key = (h, w)
        if styles is None and key in self._style_cache:
            return self._style_cache[key]
        cfg = self.config
        use = styles if styles is not None else self._styles
        if use is None:
            raise ConfigError("no style images set: pass styles to run() or call set_styles()")
        bw = cfg.style_blend_weights
        if bw is not None and len(bw) != len(use):
            raise ConfigError(f"{len(bw)} --style-blend-weights for {len(use)} style image(s)")
        longest = max(1, round(max(h, w) * cfg.style_scale))
        scaled = [imgs.resize_longest(s, longest)[None].to(self.device) for s in use]
        blend = bw or tuple(1.0 for _ in scaled)
        layers = cfg.style_layers if cfg.style_weight > 0 else ()
        targets = style_targets(self.backend.features, self.backend.gram, scaled, blend, layers, positions)
        if styles is None:
            self._style_cache[key] = targets
        return targets

    def _positions(self, h: int, w: int) -> Dict[str, int]:
        """M (positions) per loss layer present for an image of h x w."""
        probe = torch.zeros(1, 3, h, w, device=self.device)
        layers = sorted(set(self.config.content_layers) | set(self.config.style_layers))
        # Only shapes matter; a forward on a blank image is cheap next to the optimisation.
        feats = self.backend.features(probe, layers)
        return {k: v.shape[-1] * v.shape[-2] for k, v in feats.items()}

    # -- running -------------------------------------------------------------------------------
    def prepare(self, content: torch.Tensor,
                styles_per_image: Optional[Sequence[Sequence[imgs.ImageLike]]] = None) -> Tuple[torch.Tensor, Targets]:
        """Resize a batch (B, 3, H, W) or image (3, H, W) and build its targets: shared style
        targets (set_styles), or one blend per image (``styles_per_image``: B lists)."""
        cfg = self.config
        if content.ndim == 3:
            content = imgs.resize_longest(content, cfg.size)[None]
        h, w = content.shape[-2:]
        content = content.to(self.device)
        positions = self._positions(h, w)
        ctargets = content_targets(self.backend.features, content,
                                   cfg.content_layers if cfg.content_weight > 0 else ())
        spos = {k: v for k, v in positions.items() if k in cfg.style_layers}
        if styles_per_image is None:
            style = self._style_targets(h, w, spos)
        else:
            if len(styles_per_image) != content.shape[0]:
                raise ConfigError(f"{len(styles_per_image)} style lists for {content.shape[0]} content image(s)")
            per = [self._style_targets(h, w, spos, [imgs.to_tensor(s) for s in group]) for group in styles_per_image]
            style = {l: torch.cat([p[l] for p in per]) for l in per[0]}     # (B, C, C)
        return content, Targets(ctargets, style)

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
