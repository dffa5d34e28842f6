"""Spatial control with colour-coded region masks: guided Gram matrices (Gatys, Ecker, Bethge,
Hertzmann, Shechtman, *Controlling Perceptual Factors in Neural Style Transfer*, CVPR 2017).

Inputs (``StyleConfig.content_mask``, ``StyleConfig.style_masks``; CLI ``--content-mask FILE``,
``--style-mask FILE`` after a ``--style``): images whose colours name regions. A region of the
photo takes its style only from painting pixels of the same colour; a painting without a mask
covers every region. Colours are matched exactly after conversion to 8-bit RGB. The colours of a
mask are those covering at least :data:`MIN_REGION_FRACTION` of it; any other pixel (an
anti-aliased edge) is snapped to the nearest of them (RGB distance) with a :class:`MaskWarning`.

The objective. Each region r of the photo's mask becomes, at every style layer l, a weight per
position m_r (the region's indicator resized from the mask to the layer's H_l x W_l by area
average, in [0, 1]), with area M_r = sum m_r. With F the image's features (N x M) and
F_r = F diag(m_r), the guided Gram matrix is G_r = F_r F_r^T and the term is

    sum_l style_weight * w_l * sum_r (M_r / M) * sum (G_r - A_r)^2 / (4 N^2 M_r^2)

(the region's own normalisation M_r, weighted by the share of the image it covers). The target
A_r blends, over the paintings that have region r (blend weights renormalised among them), each
painting's guided Gram matrix with its own mask for r, scaled by M_r / M_s,r (its area at that
layer), as the unguided term scales a painting's Gram matrix by M / M_s. One region covering the
photo and every painting gives m_r = 1, M_r = M and exactly the unguided objective.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as tnf

from stylegrad.errors import ConfigError, ImageError
from stylegrad.io import images as imgs
from stylegrad.terms import losses
from stylegrad.terms.base import Term
from stylegrad.terms.style import as_bcm, as_nchw_like, gram_flops

# A colour is a region when it covers at least this share of its mask; rarer colours are
# snapped to the nearest region colour (anti-aliased edges), with a warning.
MIN_REGION_FRACTION = 0.01
# A mask's width / height may differ from its image's by this much (relative) before it is refused.
ASPECT_TOLERANCE = 0.02

MASK_HELP = ("Masks: draw each region in one solid colour (no anti-aliasing, no blur, save as PNG); colours are "
             "matched exactly after conversion to RGB, and anti-aliased edge pixels are snapped to the nearest "
             "region colour with a warning.")


class MaskWarning(UserWarning):
    """A mask had pixels of colours that are not regions (snapped to the nearest region colour)."""


def _hex(c: Tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in c)


@dataclass(frozen=True)
class RegionMask:
    """A decoded mask: its region colours (most common first) and each pixel's region index."""

    what: str
    colours: Tuple[Tuple[int, int, int], ...]
    labels: np.ndarray          # (H, W) int64, index into colours

    @property
    def size(self) -> Tuple[int, int]:
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    def indicator(self, colour: Tuple[int, int, int]) -> Optional[torch.Tensor]:
        """(1, 1, H, W) float32 of 1 where the mask has ``colour``, else 0; None if it has not."""
        if colour not in self.colours:
            return None
        ind = self.labels == self.colours.index(colour)
        return torch.from_numpy(ind.astype(np.float32))[None, None]


_DECODED: "Dict[tuple, RegionMask]" = {}     # the last few masks read (warned about once)


def _source_key(source, what: str) -> Optional[tuple]:
    import hashlib
    import os

    if isinstance(source, (str, os.PathLike)):
        try:
            st = os.stat(source)
        except OSError:
            return None
        return what, "path", os.fspath(source), st.st_mtime_ns, st.st_size
    if isinstance(source, np.ndarray):
        return what, "array", source.shape, str(source.dtype), hashlib.sha256(np.ascontiguousarray(source)).hexdigest()
    return None


def read_mask(source, what: str) -> RegionMask:
    """A mask from a path, PIL image, numpy array or tensor (anything ``stylegrad.io.images``
    reads): its region colours and labels. Unreadable input: ImageError naming ``what``.
    The last few masks read are kept, so a mask is decoded (and warned about) once."""
    key = _source_key(source, what)
    if key is not None and key in _DECODED:
        return _DECODED[key]
    mask = _decode(source, what)
    if key is not None:
        if len(_DECODED) >= 8:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = mask
    return mask


def _decode(source, what: str) -> RegionMask:
    try:
        t = imgs.to_tensor(source, what)
    except ImageError as e:
        msg = str(e)
        raise ImageError(msg if what in msg else f"{what}: {msg}") from None
    rgb = np.rint(t.numpy().transpose(1, 2, 0) * 255.0).astype(np.int64)          # (H, W, 3)
    flat = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, inverse, counts = np.unique(flat.ravel(), return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    keep = [i for i in order if counts[i] >= MIN_REGION_FRACTION * flat.size] or [order[0]]
    colours = np.array([[(values[i] >> 16) & 255, (values[i] >> 8) & 255, values[i] & 255] for i in keep])
    rank = np.full(len(values), -1, dtype=np.int64)
    rank[keep] = np.arange(len(keep))
    other = np.nonzero(rank < 0)[0]
    if len(other):
        oc = np.stack([(values[other] >> 16) & 255, (values[other] >> 8) & 255, values[other] & 255], 1)
        dist = ((oc[:, None, :] - colours[None, :, :]) ** 2).sum(-1)
        rank[other] = dist.argmin(1)
        n = int(counts[other].sum())
        warnings.warn(f"{what}: {n} pixel(s) of {len(other)} colour(s) that are not regions (anti-aliased edges?) "
                      f"were snapped to the nearest of its region colours "
                      f"{', '.join(_hex(c) for c in colours)}; draw masks in solid colours", MaskWarning, stacklevel=3)
    labels = rank[inverse].reshape(flat.shape)
    return RegionMask(what, tuple(tuple(int(v) for v in c) for c in colours), labels)


def check_aspect(mask: RegionMask, image_hw: Tuple[int, int], image_what: str) -> None:
    """A mask must have its image's aspect ratio (it is resized with it)."""
    mh, mw = mask.size
    h, w = image_hw
    if abs(mw / mh - w / h) > ASPECT_TOLERANCE * (w / h):
        raise ConfigError(f"{mask.what} is {mw}x{mh} px, {image_what} is {w}x{h} px: a mask needs its image's "
                          f"aspect ratio")


def masks_of(config) -> Tuple[Optional[RegionMask], List[Optional[RegionMask]]]:
    """The config's masks, read and checked against each other: (photo mask, one per painting
    or None). Errors: a painting mask without a photo mask, a photo colour no painting has."""
    style_sources = list(config.style_masks or ())
    if config.content_mask is None:
        if any(s is not None for s in style_sources):
            raise ConfigError("--style-mask needs --content-mask: the photo's mask names the regions")
        return None, []
    photo = read_mask(config.content_mask, "--content-mask")
    paintings = [None if s is None else read_mask(s, f"--style-mask of style {i + 1}")
                 for i, s in enumerate(style_sources)]
    if style_sources and all(p is not None for p in paintings):
        found = {c for p in paintings for c in p.colours}
        missing = [c for c in photo.colours if c not in found]
        if missing:
            raise ConfigError(f"--content-mask colour(s) {', '.join(_hex(c) for c in missing)} are in no --style-mask "
                              f"(photo colours: {', '.join(_hex(c) for c in photo.colours)}; painting colours: "
                              f"{', '.join(_hex(c) for c in sorted(found))}); give that region a painting")
    return photo, paintings


def check_inputs(config, content_hws: Sequence[Tuple[int, int]], style_hws: Sequence[Tuple[int, int]]) -> None:
    """Before any work: the masks read, agree with each other, and have their images' aspect
    ratios (content images and styles as (height, width); None: not known yet); one style mask
    per style."""
    photo, paintings = masks_of(config)
    if photo is None:
        return
    for hw in content_hws or ():
        check_aspect(photo, hw, "the content image")
    if style_hws is None:       # styles not known yet
        return
    if config.style_masks is not None and len(paintings) != len(style_hws):
        raise ConfigError(f"{len(paintings)} style mask(s) for {len(style_hws)} style image(s): give one per style "
                          f"(None for a painting that covers every region)")
    for i, (p, hw) in enumerate(zip(paintings, style_hws)):
        if p is not None:
            check_aspect(p, hw, f"style {i + 1}")


def _resized(ind: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """Area average of a (1, 1, H, W) indicator to (1, 1, h, w) (exactly 1 where all ones)."""
    return tnf.adaptive_avg_pool2d(ind, hw)


@dataclass
class Region:
    colour: Tuple[int, int, int]
    masks: Dict[str, torch.Tensor]    # layer -> (1, 1, M) weights in [0, 1], on the device
    areas: Dict[str, float]           # layer -> M_r
    targets: Dict[str, torch.Tensor]  # layer -> A_r, (1 or B, C, C)


class MaskedStyleTerm(Term):
    """The style term with guided Gram matrices per region (replaces ``style`` when
    ``content_mask`` is set)."""

    name = "masked_style"
    column = "style"
    replaces = "style"
    config_fields = ("content_mask", "style_masks", "style_weight", "style_layers", "style_layer_weights",
                     "style_blend_weights", "style_scale")
    kernel_ops = ("gram", "style_loss", "style_feature_grad")
    path_note = "per region, the mask products in torch"

    @classmethod
    def applies(cls, config) -> bool:
        return config.content_mask is not None or bool(config.style_masks)

    @classmethod
    def check_inputs(cls, config, content_hws, style_hws) -> None:
        check_inputs(config, content_hws, style_hws)

    def __init__(self, config):
        super().__init__(config)
        self.photo, self.paintings = masks_of(config)

    def layers(self) -> Dict[str, float]:
        return self.config.active_style_layers()

    # -- targets ---------------------------------------------------------------------------------
    def _painting_masks(self, n: int) -> List[Optional[RegionMask]]:
        if self.config.style_masks is None:
            return [None] * n
        if len(self.paintings) != n:
            raise ConfigError(f"{len(self.paintings)} style mask(s) for {n} style image(s): give one per style "
                              f"(None for a painting that covers every region)")
        return self.paintings

    def _regions(self, builder, h: int, w: int, sizes: Dict[str, Tuple[int, int]], styles) -> List[Region]:
        cfg = self.config
        scaled, blend = builder.scaled_styles(h, w, styles)
        pmasks = self._painting_masks(len(scaled))
        layers = [l for l in self.layers() if l in sizes]
        feats = [builder.backend.features(s, layers) for s in scaled]
        regions = []
        for colour in self.photo.colours:
            ind = self.photo.indicator(colour)
            masks, areas = {}, {}
            for l in layers:
                m = _resized(ind, sizes[l]).reshape(1, 1, -1)
                masks[l], areas[l] = m.to(builder.device), float(m.sum())
            having = [i for i, pm in enumerate(pmasks) if pm is None or colour in pm.colours]
            if not having:
                raise ConfigError(f"--content-mask colour {_hex(colour)} is in no --style-mask and every painting "
                                  f"has a mask; give that region a painting")
            total = float(sum(blend[i] for i in having))
            targets: Dict[str, torch.Tensor] = {}
            for i in having:
                for l in layers:
                    if l not in feats[i]:
                        raise ConfigError(f"a style image of {scaled[i].shape[-1]}x{scaled[i].shape[-2]} px is too "
                                          f"small for layer {l}: raise --style-scale or --size")
                    f = feats[i][l].detach()
                    fv = f.reshape(f.shape[0], f.shape[1], -1)
                    if pmasks[i] is None:
                        ms, area_s = None, float(fv.shape[-1])
                    else:
                        ms = _resized(pmasks[i].indicator(colour), tuple(f.shape[-2:])).reshape(1, 1, -1).to(fv.device)
                        area_s = float(ms.sum())
                    if area_s <= 0:
                        continue
                    g = builder.backend.gram(fv if ms is None else fv * ms.to(fv.dtype)).float()
                    g = g * (areas[l] / area_s) * (blend[i] / total)
                    targets[l] = g if l not in targets else targets[l] + g
            regions.append(Region(colour, masks, areas, targets))
        return regions

    def prepare(self, builder, content, positions, styles_per_image=None):
        h, w = content.shape[-2:]
        if cfg_off(self.config):
            return []
        sizes = builder.layer_sizes(h, w)
        if styles_per_image is None:     # the builder caches these per size
            return self._regions(builder, h, w, sizes, None)
        per = [self._regions(builder, h, w, sizes, [imgs.to_tensor(s, f"styles[{i}][{j}]") for j, s in enumerate(g)])
               for i, g in enumerate(styles_per_image)]
        return [Region(r.colour, r.masks, r.areas, {l: torch.cat([p[k].targets[l] for p in per]) for l in r.targets})
                for k, r in enumerate(per[0])]

    # -- value and gradient ------------------------------------------------------------------
    def value_and_grad(self, feats, targets, ops):
        from stylegrad.terms.gradnorm import l1_normalized

        cfg = self.config
        regions = targets.terms[self.name]
        any_f = next(iter(feats.values()))
        value = torch.zeros(any_f.shape[0], dtype=torch.float32, device=any_f.device)
        grads: Dict[str, torch.Tensor] = {}
        for layer, w in self.layers().items():
            if layer not in feats:
                continue
            f = feats[layer]
            N, M = f.shape[1], f.shape[2] * f.shape[3]
            fv = as_bcm(f)
            base = cfg.style_weight * w / float(N * N * M * M)
            d_sum = None
            for r in regions:
                if layer not in r.targets or r.areas[layer] <= 0:
                    continue
                m = r.masks[layer].to(fv.dtype)
                fm = fv * m
                scale = base * (M / r.areas[layer])
                loss, D = ops.style_loss(ops.gram(fm), r.targets[layer], scale / 4.0, scale)
                value = value + loss
                d = ops.style_feature_grad(D, fm) * m
                d_sum = d if d_sum is None else d_sum + d
            if d_sum is None:
                continue
            if cfg.normalize_gradients:
                d_sum = l1_normalized(d_sum, cfg.style_weight * w)
            grads[layer] = as_nchw_like(d_sum, f)
        return value, grads

    def reference_value(self, feature, feats, image, targets):
        regions = targets.terms[self.name]
        total = None
        for layer, w in self.layers().items():
            if layer not in feats:
                continue
            sw = self.config.style_weight * w
            F = feature(layer, sw)
            B, N = F.shape[:2]
            M = F[0, 0].numel()
            fv = F.reshape(B, N, M)
            for r in regions:
                if layer not in r.targets or r.areas[layer] <= 0:
                    continue
                G = losses.gram(fv * r.masks[layer].to(fv.dtype))
                # as stylegrad.terms.losses.style_layer_loss, times the region's M / M_r (1 for one region)
                v = sw * ((G - r.targets[layer]).pow(2).flatten(1).sum(1) / (4.0 * N * N * M * M) * (M / r.areas[layer]))
                total = v if total is None else total + v
        return total

    def flops(self, layer_shapes, batch=1, gram_symmetric=False) -> float:
        n = len(self.photo.colours) if self.photo is not None else 1
        return n * gram_flops(layer_shapes, self.config.style_layers, batch, gram_symmetric)


def cfg_off(config) -> bool:
    return config.style_weight == 0 or not config.active_style_layers()
