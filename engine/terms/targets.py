"""Content and style targets: P (features of the photo) and A (Gram matrices of the paintings),
and :class:`TargetBuilder`, which makes them for a backend and caches the style targets per size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError, ImageError
from stylegrad.io import images as imgs

FeatureFn = Callable[[torch.Tensor, Sequence[str]], Dict[str, torch.Tensor]]


@dataclass
class Targets:
    content: Dict[str, torch.Tensor]   # layer -> P, (B or 1, C, H, W)
    style: Dict[str, torch.Tensor]     # layer -> A, (B or 1, C, C), float32
    # term name -> what that term's prepare() made (terms whose targets are not P or A)
    terms: Dict[str, Any] = field(default_factory=dict)


def content_targets(features: FeatureFn, content: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in features(content, layers).items()}


def style_targets(features: FeatureFn, gram: Callable[[torch.Tensor], torch.Tensor],
                  styles: Sequence[torch.Tensor], blend: Sequence[float],
                  layers: Sequence[str], content_positions: Dict[str, int]) -> Dict[str, torch.Tensor]:
    """Blend of the paintings' Gram matrices at each style layer.

    Differs from the paper, which used a painting of the photo's size: when a painting's
    feature map has M_s positions and the generated image's has M, its Gram matrix is scaled by
    M / M_s, the Gram matrix the same statistics would give at the generated image's size.
    ``gram`` maps (B, C, M) to (B, C, C). ``content_positions`` names the layers present for the generated image (an image too small
    for a pooling stage has no deeper layers) with their M.
    """
    total = float(sum(blend))
    out: Dict[str, torch.Tensor] = {}
    for img, w in zip(styles, blend):
        feats = features(img, [l for l in layers if l in content_positions])
        for layer, M in content_positions.items():
            if layer not in layers:
                continue
            if layer not in feats:
                raise ConfigError(f"a style image of {img.shape[-1]}x{img.shape[-2]} px is too small for layer "
                                  f"{layer}: raise --style-scale or --size")
            f = feats[layer].detach()
            Ms = f.shape[-1] * f.shape[-2]
            g = gram(f.reshape(f.shape[0], f.shape[1], -1)).float() * (M / Ms) * (w / total)
            out[layer] = g if layer not in out else out[layer] + g
    return out


class TargetBuilder:
    """Targets of one backend and config. Style targets of the styles given to
    :meth:`set_styles` are cached per output size; per-image styles are not cached."""

    def __init__(self, backend, config: StyleConfig, device: torch.device):
        from stylegrad import terms

        self.backend = backend       # its features() and gram() make the targets
        self.config = config
        self.device = device
        self.terms = terms.build(config)
        self._plain_style = any(t.name == "style" for t in self.terms)
        self._term_cache: Dict[Tuple[int, int], Dict[str, Any]] = {}   # of the set_styles() styles
        self._styles: Optional[List[torch.Tensor]] = None
        self._style_cache: Dict[Tuple[int, int], Dict[str, torch.Tensor]] = {}

    def set_styles(self, styles: Sequence[imgs.ImageLike]) -> None:
        if isinstance(styles, imgs.SINGLE_IMAGE_TYPES):    # one image, not a sequence of them
            styles = [styles]
        if styles is None or not isinstance(styles, (list, tuple)):
            raise ImageError(f"styles must be a list of images, got {type(styles).__name__}")
        if not styles:
            raise ConfigError("at least one style image is needed (--style)")
        self._check_blend(len(styles))
        self._styles = [imgs.to_tensor(s, f"styles[{i}]") for i, s in enumerate(styles)]
        self._style_cache.clear()
        self._term_cache.clear()

    def style_sizes(self) -> List[Tuple[int, int]]:
        """(height, width) of the styles given to :meth:`set_styles`, as read."""
        return [tuple(s.shape[-2:]) for s in (self._styles or [])]

    @property
    def styles(self) -> Optional[List[torch.Tensor]]:
        """The style images of :meth:`set_styles` (full size), or None."""
        return self._styles

    def _check_blend(self, n: int) -> None:
        bw = self.config.style_blend_weights
        if bw is not None and len(bw) != n:
            raise ConfigError(f"{len(bw)} --style-blend-weights for {n} style image(s)")

    def layer_sizes(self, h: int, w: int) -> Dict[str, Tuple[int, int]]:
        """(height, width) per loss layer present for an image of h x w."""
        probe = torch.zeros(1, 3, h, w, device=self.device)
        layers = sorted(set(self.config.content_layers) | set(self.config.style_layers))
        # Only shapes matter; a forward on a blank image is cheap next to the optimisation.
        feats = self.backend.features(probe, layers)
        return {k: (int(v.shape[-2]), int(v.shape[-1])) for k, v in feats.items()}

    def positions(self, h: int, w: int) -> Dict[str, int]:
        """M (positions) per loss layer present for an image of h x w."""
        return {k: hh * ww for k, (hh, ww) in self.layer_sizes(h, w).items()}

    def scaled_styles(self, h: int, w: int, styles: Optional[List[torch.Tensor]] = None
                      ) -> Tuple[List[torch.Tensor], Tuple[float, ...]]:
        """The style images (those of set_styles(), or ``styles``) resized for an output of
        h x w (``style_scale``), as (1, 3, h', w') on the device, and their blend weights."""
        cfg = self.config
        use = styles if styles is not None else self._styles
        if use is None:
            raise ConfigError("no style images set: pass styles to run() or call set_styles()")
        self._check_blend(len(use))
        longest = imgs.style_side(max(h, w), cfg.style_scale, cfg.resize_filter)
        scaled = [imgs.resize_longest(s, longest, cfg.resize_filter)[None].to(self.device) for s in use]
        return scaled, cfg.style_blend_weights or tuple(1.0 for _ in scaled)

    def style_targets(self, h: int, w: int, positions: Dict[str, int],
                      styles: Optional[List[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Blended Gram targets for an output of h x w: of the styles set with set_styles()
        (cached per size), or of ``styles`` (not cached)."""
        key = (h, w)
        if styles is None and key in self._style_cache:
            return self._style_cache[key]
        cfg = self.config
        scaled, blend = self.scaled_styles(h, w, styles)
        layers = cfg.style_layers if cfg.style_weight > 0 and self._plain_style else ()
        targets = style_targets(self.backend.features, self.backend.gram, scaled, blend, layers, positions)
        if styles is None:
            self._style_cache[key] = targets
        return targets

    def build(self, content: torch.Tensor,
              styles_per_image: Optional[Sequence[Sequence[imgs.ImageLike]]] = None) -> Targets:
        """Targets for a batch ``content`` (B, 3, H, W) on the device: the shared style targets
        (set_styles), or one blend per image (``styles_per_image``: B lists)."""
        cfg = self.config
        h, w = content.shape[-2:]
        positions = self.positions(h, w)
        ctargets = content_targets(self.backend.features, content,
                                   cfg.content_layers if cfg.content_weight > 0 else ())
        spos = {k: v for k, v in positions.items() if k in cfg.style_layers}
        if not self._plain_style:      # another term (masked style) makes its own style targets
            style = {}
        elif styles_per_image is None:
            style = self.style_targets(h, w, spos)
        else:
            if len(styles_per_image) != content.shape[0]:
                raise ConfigError(f"{len(styles_per_image)} style lists for {content.shape[0]} content image(s)")
            per = [self.style_targets(h, w, spos, [imgs.to_tensor(s, f"styles[{i}][{j}]") for j, s in enumerate(group)])
                   for i, group in enumerate(styles_per_image)]
            style = {l: torch.cat([p[l] for p in per]) for l in per[0]}     # (B, C, C)
        # targets of the terms that keep their own; of the set_styles() styles: cached per size
        cached = styles_per_image is None and (h, w) in self._term_cache
        prepared = self._term_cache[(h, w)] if cached else {}
        if not cached:
            for term in self.terms:
                t = term.prepare(self, content, positions, styles_per_image)
                if t is not None:
                    prepared[term.name] = t
            if styles_per_image is None:
                self._term_cache[(h, w)] = prepared
        return Targets(ctargets, style, prepared)
