"""VGG16/VGG19 convolutional layers as plain tensors and a functional forward pass.

We keep the network as a list of :class:`ConvLayer` (weights + bias) rather than an
``nn.Module`` so that every backend (autograd reference, hand-written backward, ONNX export,
CUDA) walks the same layer list. Layer names follow the paper (``conv4_2``, ``relu4_2``,
``pool4``); ``torchvision_index`` is the position in torchvision's ``vgg.features``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

import torch
import torch.nn.functional as F

# Channels per conv, "M" for a 2x2 pool (torchvision's cfgs "D" and "E").
_CFGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}

MODELS = tuple(_CFGS)

# Input conventions ("preprocess"): how the weights expect the image, applied inside the model
# as (x - mean) / std per channel on the RGB image in [0, 1].
#   torchvision  ImageNet mean/std of torchvision's checkpoints.
#   caffe        the Caffe VGG models of the paper (and jcjohnson/neural-style, neural-style-pt's
#                converted files, Keras' VGG16): BGR, 0..255, minus the mean pixel
#                [103.939, 116.779, 123.68] (BGR), not divided by a std. The BGR order is
#                folded into conv1_1 when the weights are loaded (its input channels are
#                reversed once; exact, as a permutation commutes with zero padding), so every
#                backend feeds RGB and only these constants differ: mean = the RGB mean pixel
#                / 255, std = 1 / 255.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESS_STATS = {
    "torchvision": (IMAGENET_MEAN, IMAGENET_STD),
    "caffe": (tuple(v / 255.0 for v in reversed(CAFFE_MEAN_BGR)), (1.0 / 255.0,) * 3),
}
PREPROCESSES = tuple(PREPROCESS_STATS)
# The Caffe convention's pixel scale: [0, 1] images become 0..255 before the mean pixel is
# subtracted. neural-style-pt multiplies by 256 instead (``StyleConfig.pixel_scale``); its mean
# and std are then mean / 256 and 1 / 256 (``input_stats``). Only the Caffe convention has one.
CAFFE_PIXEL_SCALE = 255.0


@dataclass(frozen=True)
class LayerSpec:
    name: str            # conv1_1, relu1_1, pool1, ...
    kind: str            # "conv" | "relu" | "pool"
    torchvision_index: int
    in_channels: int
    out_channels: int


def layer_specs(model: str) -> List[LayerSpec]:
    if model not in _CFGS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(_CFGS)}")
    specs: List[LayerSpec] = []
    block, conv_in_block, idx, ch = 1, 0, 0, 3
    for v in _CFGS[model]:
        if v == "M":
            specs.append(LayerSpec(f"pool{block}", "pool", idx, ch, ch))
            idx += 1
            block += 1
            conv_in_block = 0
        else:
            conv_in_block += 1
            specs.append(LayerSpec(f"conv{block}_{conv_in_block}", "conv", idx, ch, v))
            specs.append(LayerSpec(f"relu{block}_{conv_in_block}", "relu", idx + 1, v, v))
            idx += 2
            ch = v
    return specs


def layer_names(model: str) -> List[str]:
    return [s.name for s in layer_specs(model)]


def layer_channels(model: str) -> Dict[str, int]:
    return {s.name: s.out_channels for s in layer_specs(model)}


@dataclass
class ConvLayer:
    name: str
    weight: torch.Tensor   # (Cout, Cin, 3, 3) float32
    bias: torch.Tensor     # (Cout,)


@dataclass
class VGG:
    """The convolutional part of a VGG network, truncated where the caller needs."""

    model: str
    convs: Dict[str, ConvLayer]
    pool: str = "avg"   # the paper recommends average pooling; "max" as in the classifier
    preprocess: str = "torchvision"   # input convention of the weights (PREPROCESS_STATS)
    pixel_scale: float = CAFFE_PIXEL_SCALE   # caffe only: [0, 1] x this, minus the mean pixel

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_STATS:
            raise ValueError(f"unknown preprocess {self.preprocess!r}; expected one of {', '.join(PREPROCESSES)}")
        check_pixel_scale(self.preprocess, self.pixel_scale)

    def specs_upto(self, last: str) -> List[LayerSpec]:
        specs = layer_specs(self.model)
        names = [s.name for s in specs]
        if last not in names:
            raise ValueError(f"unknown layer {last!r} for {self.model}")
        return specs[: names.index(last) + 1]

    def to(self, device=None, dtype=None) -> "VGG":
        convs = {
            k: ConvLayer(k, c.weight.to(device=device, dtype=dtype), c.bias.to(device=device, dtype=dtype))
            for k, c in self.convs.items()
        }
        return VGG(self.model, convs, self.pool, self.preprocess, self.pixel_scale)

    def with_pool(self, pool: str) -> "VGG":
        return VGG(self.model, self.convs, pool, self.preprocess, self.pixel_scale)

    def with_pixel_scale(self, pixel_scale: float) -> "VGG":
        return VGG(self.model, self.convs, self.pool, self.preprocess, float(pixel_scale))


def check_pixel_scale(preprocess: str, pixel_scale: float) -> None:
    """Only the Caffe convention scales pixels; torchvision's is (x - mean) / std on [0, 1]."""
    if preprocess != "caffe" and pixel_scale != CAFFE_PIXEL_SCALE:
        raise ValueError(f"a pixel scale ({pixel_scale:g}) applies to Caffe-convention weights only; "
                         f"these weights take the {preprocess} convention")


def deepest(model: str, layers: Iterable[str]) -> str:
    order = {n: i for i, n in enumerate(layer_names(model))}
    layers = list(layers)
    if not layers:
        raise ValueError("no layers requested")
    return max(layers, key=lambda n: order[n])


_STATS: Dict[Tuple[str, str, torch.dtype, float], Tuple[torch.Tensor, torch.Tensor]] = {}


def preprocess_stats(preprocess: str, pixel_scale: float = CAFFE_PIXEL_SCALE
                     ) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(mean, std) per RGB channel of an input convention at a pixel scale (Caffe only)."""
    check_pixel_scale(preprocess, pixel_scale)
    if preprocess == "caffe" and pixel_scale != CAFFE_PIXEL_SCALE:
        return (tuple(v / pixel_scale for v in reversed(CAFFE_MEAN_BGR)), (1.0 / pixel_scale,) * 3)
    return PREPROCESS_STATS[preprocess]


def input_stats(preprocess: str, device: torch.device, dtype: torch.dtype,
                pixel_scale: float = CAFFE_PIXEL_SCALE) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of an input convention as (1, 3, 1, 1) tensors, made once per convention,
    pixel scale, device and dtype. Built from host data only the first time: a host-to-device
    copy inside a CUDA graph capture is illegal, and the CUDA backend's eager warm-up
    iterations create these before it captures."""
    key = (preprocess, str(device), dtype, float(pixel_scale))
    if key not in _STATS:
        mean, std = preprocess_stats(preprocess, pixel_scale)
        _STATS[key] = (torch.tensor(mean, dtype=dtype, device=device).view(1, 3, 1, 1),
                       torch.tensor(std, dtype=dtype, device=device).view(1, 3, 1, 1))
    return _STATS[key]


def normalize(image: torch.Tensor, preprocess: str = "torchvision",
              pixel_scale: float = CAFFE_PIXEL_SCALE) -> torch.Tensor:
    mean, std = input_stats(preprocess, image.device, image.dtype, pixel_scale)
    return (image - mean) / std


def pool2x2(x: torch.Tensor, pool: str) -> torch.Tensor:
    # Floor mode, as torchvision: when a side is odd its last row/column is dropped.
    if pool == "avg":
        return F.avg_pool2d(x, 2, 2)
    return F.max_pool2d(x, 2, 2)


def pool_fits(x: torch.Tensor) -> bool:
    """A 2x2/stride-2 pool of a side of 1 pixel would be empty."""
    return x.shape[-1] >= 2 and x.shape[-2] >= 2


def forward(vgg: VGG, image: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Features at ``layers`` of an RGB image batch in [0, 1], shape (N, 3, H, W).

    Images too small for a pooling stage stop there: layers after it are absent from the
    result (an image of side < 2**k has no layers after pool k). Callers treat an absent layer
    as contributing nothing to the loss.
    """
    want = set(layers)
    out: Dict[str, torch.Tensor] = {}
    if not want:
        return out
    x = normalize(image, vgg.preprocess, vgg.pixel_scale)
    for spec in vgg.specs_upto(deepest(vgg.model, want)):
        if spec.kind == "conv":
            c = vgg.convs[spec.name]
            x = F.conv2d(x, c.weight, c.bias, padding=1)
        elif spec.kind == "relu":
            x = F.relu(x)
        else:
            if not pool_fits(x):
                break
            x = pool2x2(x, vgg.pool)
        if spec.name in want:
            out[spec.name] = x
    return out
