"""Hand-written backward through VGG: the image gradient from feature gradients, no autograd.

One plan (:class:`BackwardPlan`) fixes, for a model, a pooling and a set of loss layers, what
the forward pass keeps. :func:`forward_saving` runs the forward and keeps exactly that;
:func:`backward` turns ``d loss / d feature`` at the loss layers into ``d loss / d image``.
Both are plain torch ops (CPU or CUDA) and are also what the ONNX exporter traces
(``stylegrad.export.onnx_graphs`` wraps them in ``nn.Module`` s), so the ``torch`` and
``onnxruntime`` backends share one implementation.

Walking down from the deepest loss layer, each layer's backward step is:

``relu``   g * (a > 0). The gradient of a loss at this layer is added first; at a loss layer
           the step is ``kernels.relu_backward_accumulate(g_above, g_loss, a)`` with ``a`` the
           layer's feature, which the losses hold anyway.
``conv``   transposed convolution with the same weights (3x3, stride 1, pad 1: output size =
           input size, so no output_padding question), or equivalently a convolution with the
           kernel flipped and in/out channels swapped; ``conv_mode`` picks one (measured:
           ``CONV_BACKWARD`` below, ``stylegrad.export.onnx_graphs.EXPORT_CONV_BACKWARD``).
           No weight gradient, so no input saved.
``pool``   avg: each output gradient / 4 to its 2x2 window. max: the whole gradient to the
           window's first maximum in row-major order (torch's tie rule). Floor mode: the
           row/column a pool drops on an odd side gets gradient 0 (zero padding).
input      normalisation (x - mean) / std: gradient / std.

What is saved (per image; features at loss layers are *not* counted: the losses need them in
any backend, and the ReLU steps at loss layers reuse them as their mask):

* a ReLU not at a loss layer: its mask ``a > 0`` as ``bool`` (1 byte per element), except a
  ReLU followed by a max pool, whose mask the pool's winner index already encodes;
* a max pool: ``uint8`` winner per output element, 0..3 = window position (2*row + col), 4 = no
  gradient (window maximum is 0, i.e. every input was cut by the ReLU); 1/4 byte per input
  element of the pool;
* conv and avg pool: nothing (weights only).

Memory per input pixel, VGG19, default layers (content relu4_2; style relu1_1, relu2_1, relu3_1,
relu4_1, relu5_1), from the rules above (block b has 1/4**(b-1) of the pixels):

  avg pooling: masks relu1_2 64 + relu2_2 128/4 + relu3_2..3_4 3*256/16 + relu4_3, relu4_4 2*512/64
               = 64 + 32 + 48 + 16 = 160 bytes per input pixel
  max pooling: masks relu3_2, relu3_3 2*256/16 + relu4_3 512/64 = 40, winners pool1..pool4
               64/4 + 128/16 + 256/64 + 512/256 = 30; total 70 bytes per input pixel

The loss-layer features themselves (520 bytes per pixel with these layers) are held by every
backend. Autograd, for the same forward, saves 1292 (avg) / 1532 (max) bytes per pixel
(measured with saved_tensors_hooks, torch 2.13: float32 ReLU outputs, max-pool int64 indices),
i.e. 772 / 1012 beyond those features against our 160 / 70. ``saved_bytes`` measures a saved
state; ``tests/test_backward.py`` checks both numbers on a 256x256 image. Masks could be
bit-packed for another 8x at the cost of unpacking in the backward; not done.

This is the exact gradient of the paper's objective: nothing here departs from the paper (which
does not say how ties in max pooling break; we follow torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from stylegrad.model.vgg import VGG, input_stats, LayerSpec, layer_names, normalize, pool2x2, pool_fits

# Eager torch on CPU: conv_transpose2d and conv2d with flipped weights measured within
# run-to-run noise of each other (VGG19 backward at 256x256, 2 cores, torch 2.13);
# conv_transpose2d needs no flipped copy of the weights.
CONV_BACKWARD = "conv_transpose2d"
CONV_MODES = ("conv_transpose2d", "conv2d")

NO_WINNER = 4  # max-pool winner code: window maximum is 0, no gradient flows


def mask_key(layer: str) -> str:
    return f"saved_mask_{layer}"


def winner_key(layer: str) -> str:
    return f"saved_winner_{layer}"


@dataclass(frozen=True)
class BackwardPlan:
    """What the forward keeps for the backward, for one model, pooling and loss-layer set."""

    model: str
    pool: str
    loss_layers: Tuple[str, ...]      # in network order
    specs: Tuple[LayerSpec, ...]      # the network up to the deepest loss layer
    mask_layers: Tuple[str, ...]      # ReLUs whose bool mask is saved
    winner_pools: Tuple[str, ...]     # max pools whose uint8 winner index is saved

    @property
    def saved_keys(self) -> Tuple[str, ...]:
        """Names of the saved tensors in network order (also the ONNX names)."""
        keys: List[str] = []
        for s in self.specs:
            if s.name in self.mask_layers:
                keys.append(mask_key(s.name))
            elif s.name in self.winner_pools:
                keys.append(winner_key(s.name))
        return tuple(keys)

    @property
    def activation_layers(self) -> Tuple[str, ...]:
        """Loss layers whose feature the backward reads (ReLU loss layers: their mask)."""
        kinds = {s.name: s.kind for s in self.specs}
        return tuple(l for l in self.loss_layers if kinds[l] == "relu")


def make_plan(model: str, pool: str, loss_layers: Sequence[str]) -> BackwardPlan:
    from stylegrad.model.vgg import layer_specs

    order = {n: i for i, n in enumerate(layer_names(model))}
    unknown = [l for l in loss_layers if l not in order]
    if unknown:
        raise ValueError(f"unknown layer(s) for {model}: {', '.join(unknown)}")
    if pool not in ("avg", "max"):
        raise ValueError(f"pool must be avg or max, got {pool!r}")
    losses = tuple(sorted(set(loss_layers), key=order.__getitem__))
    all_specs = layer_specs(model)
    specs = tuple(all_specs[: order[losses[-1]] + 1]) if losses else ()
    masks: List[str] = []
    winners: List[str] = []
    for i, s in enumerate(specs):
        if s.kind == "relu" and s.name not in losses:
            followed_by_max = pool == "max" and i + 1 < len(specs) and specs[i + 1].kind == "pool"
            if not followed_by_max:
                masks.append(s.name)
        elif s.kind == "pool" and pool == "max":
            winners.append(s.name)
    return BackwardPlan(model, pool, losses, specs, tuple(masks), tuple(winners))


# -- forward ------------------------------------------------------------------------------------

def max_pool_winner(x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """uint8 code of the input that won each 2x2 window of a max pool (see NO_WINNER).

    Ties go to the first maximum in row-major window order, as in torch's max_pool2d kernels,
    so the gradient matches autograd's even on flat regions (a constant image has exact ties).
    """
    h, w = pooled.shape[-2], pooled.shape[-1]
    xc = x[..., : 2 * h, : 2 * w]                         # floor mode: drop the odd row/column
    s00, s01 = xc[..., 0::2, 0::2], xc[..., 0::2, 1::2]
    s10 = xc[..., 1::2, 0::2]
    code = torch.where(s10 == pooled, 2.0, 3.0)
    code = torch.where(s01 == pooled, 1.0, code)
    code = torch.where(s00 == pooled, 0.0, code)
    code = torch.where(pooled > 0, code, float(NO_WINNER))
    return code.to(torch.uint8)


def forward_saving(vgg: VGG, plan: BackwardPlan, image: torch.Tensor
                   ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Features at the plan's loss layers and the tensors :func:`backward` needs.

    Like :func:`stylegrad.model.vgg.forward`, an image too small for a pool stops there: deeper loss
    layers are absent from the features, and nothing past the pool is saved.
    """
    feats: Dict[str, torch.Tensor] = {}
    saved: Dict[str, torch.Tensor] = {}
    if not plan.specs:
        return feats, saved
    losses = set(plan.loss_layers)
    x = normalize(image, vgg.preprocess, vgg.pixel_scale)
    for spec in plan.specs:
        if spec.kind == "conv":
            c = vgg.convs[spec.name]
            x = F.conv2d(x, c.weight, c.bias, padding=1)
        elif spec.kind == "relu":
            x = F.relu(x)
            if spec.name in plan.mask_layers:
                saved[mask_key(spec.name)] = x > 0
        else:
            if not pool_fits(x):
                break
            pooled = pool2x2(x, plan.pool)
            if spec.name in plan.winner_pools:
                saved[winner_key(spec.name)] = max_pool_winner(x, pooled)
            x = pooled
        if spec.name in losses:
            feats[spec.name] = x
    return feats, saved


# -- backward -----------------------------------------------------------------------------------

def _pad_to(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Zero-pad bottom/right to ``like``'s height and width: the gradient of what floor-mode
    pooling dropped. Sizes come from tensors so that a traced graph keeps them dynamic."""
    dh = like.shape[-2] - g.shape[-2]
    dw = like.shape[-1] - g.shape[-1]
    return F.pad(g, (0, dw, 0, dh))


def avg_pool_backward(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    up = F.interpolate(g, scale_factor=2.0, mode="nearest") * 0.25
    return _pad_to(up, like)


def max_pool_backward(g: torch.Tensor, winner: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    code = winner.to(g.dtype)   # uint8 in, compared as float (TensorRT: uint8 only at the I/O)
    parts = [g * (code == float(k)) for k in range(4)]
    n, c, h, w = g.shape
    # channel c*4 + (2*row + col) -> pixel (2i+row, 2j+col): exactly pixel_shuffle(2)
    up = F.pixel_shuffle(torch.stack(parts, dim=2).reshape(n, c * 4, h, w), 2)
    return _pad_to(up, like)


def flip_weight(weight: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, 3, 3) -> (Cin, Cout, 3, 3) flipped: conv2d with it = conv_transpose2d."""
    return weight.transpose(0, 1).flip(2, 3).contiguous()


def conv_backward(g: torch.Tensor, weight: torch.Tensor, mode: str = CONV_BACKWARD,
                  flipped: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gradient w.r.t. a 3x3/stride-1/pad-1 conv's input: the transposed convolution, or
    equivalently a convolution with the kernel flipped and in/out channels swapped
    (``flipped``: precomputed :func:`flip_weight`, e.g. an exported graph's initializer)."""
    if mode == "conv_transpose2d":
        return F.conv_transpose2d(g, weight, padding=1)
    if mode == "conv2d":
        return F.conv2d(g, flipped if flipped is not None else flip_weight(weight), padding=1)
    raise ValueError(f"conv_mode must be one of {CONV_MODES}, got {mode!r}")


def _mask_backward(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # g * bool mask: ~10x faster than torch.where(mask, g, 0) on CPU (measured, torch 2.13)
    return g * mask


def _pool_input_like(plan: BackwardPlan, i: int, feats: Dict[str, torch.Tensor],
                     saved: Dict[str, torch.Tensor]) -> torch.Tensor:
    """A tensor with the spatial size of pool ``i``'s input: the nearest ReLU/conv below it in
    the same block whose mask or feature exists (every VGG block has >= 2 convs, so the ReLU
    before the last conv always has one)."""
    for s in reversed(plan.specs[:i]):
        if s.kind == "pool":
            break
        if s.name in feats:
            return feats[s.name]
        if mask_key(s.name) in saved:
            return saved[mask_key(s.name)]
    raise RuntimeError(f"no saved tensor gives the input size of {plan.specs[i].name}")  # plan bug


def backward(vgg: VGG, plan: BackwardPlan, feats: Dict[str, torch.Tensor],
             saved: Dict[str, torch.Tensor], feature_grads: Dict[str, torch.Tensor],
             conv_mode: str = CONV_BACKWARD,
             flipped: Optional[Dict[str, torch.Tensor]] = None, ops=None) -> torch.Tensor:
    """d loss / d image (N, 3, H, W) from d loss / d feature at some of the plan's loss layers.

    ``feats`` must hold the plan's ReLU loss layers that the forward reached (the backward reads
    their masks from them); ``feature_grads`` may omit layers (they contribute nothing).
    ``conv_mode`` / ``flipped``: see :func:`conv_backward` (``flipped`` maps conv names to
    precomputed flipped weights). ``ops``: where ``relu_backward_accumulate`` comes from
    (default ``stylegrad.kernels``; the CUDA backend passes its kernels).
    """
    if ops is None:
        from stylegrad import kernels as ops
    names = [s.name for s in plan.specs]
    stray = [l for l in feature_grads if l not in plan.loss_layers]
    if stray:
        raise ValueError(f"gradients given for layers outside the plan: {', '.join(stray)}")
    present = list(feature_grads)
    if not present:
        raise ValueError("backward needs the gradient of at least one of the plan's loss layers")
    start = max(names.index(l) for l in present)
    g: Optional[torch.Tensor] = None
    for i in range(start, -1, -1):
        spec = plan.specs[i]
        g_loss = feature_grads.get(spec.name)
        if spec.kind == "relu" and spec.name in plan.loss_layers:
            g = ops.relu_backward_accumulate(g, g_loss, feats[spec.name])
            continue
        if g_loss is not None:
            g = g_loss if g is None else g + g_loss
        if g is None:  # plan bug: walking starts at a layer with a gradient
            raise RuntimeError(f"no gradient reached {spec.name}")
        if spec.kind == "relu":
            if spec.name in plan.mask_layers:
                g = _mask_backward(g, saved[mask_key(spec.name)])
            # else: followed by a max pool, whose winner code already applied the mask
        elif spec.kind == "conv":
            g = conv_backward(g, vgg.convs[spec.name].weight, conv_mode,
                              flipped.get(spec.name) if flipped else None)
        else:
            like = _pool_input_like(plan, i, feats, saved)
            if plan.pool == "max":
                g = max_pool_backward(g, saved[winner_key(spec.name)], like)
            else:
                g = avg_pool_backward(g, like)
    std = input_stats(vgg.preprocess, g.device, g.dtype, vgg.pixel_scale)[1]
    return g / std


def pools_before(model: str, layer: str) -> int:
    """How many 2x2 pools lie on the way to ``layer`` (the layer itself included)."""
    from stylegrad.model.vgg import layer_specs

    n = 0
    for s in layer_specs(model):
        n += s.kind == "pool"
        if s.name == layer:
            return n
    raise ValueError(f"unknown layer {layer!r} for {model}")


def reachable_layers(model: str, layers: Sequence[str], height: int, width: int) -> Tuple[str, ...]:
    """The layers an image of height x width reaches: after k pools its sides are
    floor(side / 2**k), and a pool needs both sides >= 2 (see ``stylegrad.model.vgg.forward``)."""
    side = min(height, width)
    return tuple(l for l in layers if side >= 2 ** pools_before(model, l))


def saved_bytes(saved: Dict[str, torch.Tensor]) -> int:
    """Bytes held by a saved state (features at loss layers excluded: see the module doc)."""
    return sum(t.numel() * t.element_size() for t in saved.values())


def planned_bytes_per_pixel(plan: BackwardPlan) -> float:
    """Bytes per input pixel the plan saves, from the rules in the module doc, for an image
    whose sides are divisible by every pool (other sizes: slightly less, floor mode)."""
    from stylegrad.model.vgg import layer_channels

    ch = layer_channels(plan.model)
    total, area = 0.0, 1.0
    for s in plan.specs:
        if s.kind == "pool":
            if s.name in plan.winner_pools:
                total += ch[s.name] * area / 4.0      # one uint8 per pool output element
            area /= 4.0
        elif s.name in plan.mask_layers:
            total += ch[s.name] * area                 # one bool per element
    return total
