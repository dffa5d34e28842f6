"""The two ONNX graphs: ``nn.Module`` wrappers of ``stylegrad.terms.backward`` and their export.

``forward.onnx``   image (N, 3, H, W) float32 in [0, 1] (normalised inside)
                   -> one output per loss layer, named by the layer (``relu4_2``), float32
                   -> ``saved_mask_<relu>`` (bool) and ``saved_winner_<pool>`` (uint8)
``backward.onnx``  the ReLU loss-layer features (same names as the forward's outputs),
                   the ``saved_*`` tensors, ``grad_<layer>`` per loss layer
                   -> ``grad_image`` (N, 3, H, W) float32

Batch, height and width are dynamic. The graphs are traced from the same functions the
``torch`` backend runs, so the two cannot drift apart. A graph is valid for images whose
shorter side is at least ``min_side`` = 2**(pools before its deepest layer): a smaller image
never reaches that layer (see ``stylegrad.model.vgg.forward``); callers export a graph for the layers
it does reach (the ``onnxruntime`` backend does so automatically).

Only operators TensorRT's ONNX parser lists as supported (onnx-tensorrt docs/operators.md,
TensorRT 10.x) are allowed, with its type limits in mind: no MaxUnpool and no MaxPool indices
(max-pool winners are recomputed from four strided slices), Pad and Equal only on float32,
uint8 only at graph inputs/outputs (cast at once). Conv/ConvTranspose weights are initializers.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from stylegrad.model.vgg import VGG, ConvLayer, layer_channels
from stylegrad.terms import backward as bw

# Operators the exported graphs may contain; each is in onnx-tensorrt's support matrix
# (TensorRT 10.x) for the types we use (float32 unless noted).
ALLOWED_OPS = frozenset({
    "Add", "AveragePool", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose",
    "DepthToSpace", "Div", "Equal", "Expand", "Gather", "Greater", "Identity", "MaxPool", "Mul",
    "Pad", "Relu", "Reshape", "Resize", "Shape", "Slice", "Squeeze", "Sub", "Transpose",
    "Unsqueeze", "Where",
})


# The export options every caller defaults to (CLI, export cache, onnxruntime backend): they
# are decided here only.
# Opset (export_onnx accepts MIN_OPSET..MAX_OPSET).
DEFAULT_OPSET = 17
# How the backward graph undoes a convolution. ONNX Runtime (CPU, 1.32) runs the backward ~25%
# faster with Conv on flipped weights than with ConvTranspose (VGG19 to relu5_1, 256x256: 151 vs
# 201 ms min, 158 vs 218 median of 8, 2 cores). Both are TensorRT-supported; the flip is folded
# into the initializers at export.
EXPORT_CONV_BACKWARD = "conv2d"


def _dim_names(k: int) -> Tuple[str, str]:
    """Symbolic height/width after k pools (floor(H / 2**k))."""
    return ("H", "W") if k == 0 else (f"H_div{2 ** k}", f"W_div{2 ** k}")


def tensor_specs(plan: bw.BackwardPlan) -> Dict[str, dict]:
    """name -> {dtype, shape (symbolic), pools} of every input and output of both graphs:
    ``image``, the loss-layer features, the ``saved_*`` tensors, ``grad_<layer>`` (as its layer)
    and ``grad_image``."""
    ch = layer_channels(plan.model)
    out: Dict[str, dict] = {"image": {"dtype": "float32", "shape": ["N", 3, "H", "W"], "pools": 0}}
    pools = 0
    for s in plan.specs:
        if s.kind == "pool":
            pools += 1
        h, w = _dim_names(pools)
        if s.name in plan.loss_layers:
            out[s.name] = {"dtype": "float32", "shape": ["N", ch[s.name], h, w], "pools": pools}
        if s.name in plan.mask_layers:
            out[bw.mask_key(s.name)] = {"dtype": "bool", "shape": ["N", ch[s.name], h, w], "pools": pools}
        if s.name in plan.winner_pools:
            out[bw.winner_key(s.name)] = {"dtype": "uint8", "shape": ["N", ch[s.name], h, w], "pools": pools}
    out.update({grad_name(l): dict(out[l]) for l in plan.loss_layers})
    out["grad_image"] = dict(out["image"])
    return out


def grad_name(layer: str) -> str:
    """The backward graph's input for d loss / d (features at ``layer``)."""
    return f"grad_{layer}"


def forward_output_names(plan: bw.BackwardPlan) -> List[str]:
    return list(plan.loss_layers) + list(plan.saved_keys)


def backward_input_names(plan: bw.BackwardPlan) -> List[str]:
    return list(plan.activation_layers) + list(plan.saved_keys) + [grad_name(l) for l in plan.loss_layers]


class _Weights(nn.Module):
    """Conv weights as buffers, so the exporter writes them as initializers (TensorRT needs
    Conv/ConvTranspose weights to be initializers)."""

    def __init__(self, vgg: VGG, plan: bw.BackwardPlan, with_bias: bool, flipped: bool = False):
        super().__init__()
        self.model, self.pool, self.preprocess = vgg.model, plan.pool, vgg.preprocess
        self.pixel_scale = vgg.pixel_scale
        self.names = [s.name for s in plan.specs if s.kind == "conv"]
        self.with_bias = with_bias
        self.has_flipped = flipped
        for n in self.names:
            c = vgg.convs[n]
            w = c.weight.detach().float().cpu().contiguous()
            if flipped:   # precomputed: a traced flip would be a runtime Slice, not an initializer
                self.register_buffer(f"{n}_flipped", bw.flip_weight(w))
            else:
                self.register_buffer(f"{n}_weight", w)
            if with_bias:
                self.register_buffer(f"{n}_bias", c.bias.detach().float().cpu().contiguous())

    def flipped(self) -> Dict[str, torch.Tensor]:
        return {n: getattr(self, f"{n}_flipped") for n in self.names} if self.has_flipped else {}

    def vgg(self) -> VGG:
        convs = {}
        for n in self.names:
            # with flipped weights only, the unflipped ones are never read: an empty stand-in
            w = getattr(self, f"{n}_weight") if not self.has_flipped else torch.zeros(0)
            b = getattr(self, f"{n}_bias") if self.with_bias else torch.zeros(0)
            convs[n] = ConvLayer(n, w, b)
        return VGG(self.model, convs, self.pool, self.preprocess, self.pixel_scale)


class ForwardGraph(nn.Module):
    def __init__(self, vgg: VGG, plan: bw.BackwardPlan):
        super().__init__()
        self.plan = plan
        self.weights = _Weights(vgg, plan, with_bias=True)

    @property
    def output_names(self) -> List[str]:
        return forward_output_names(self.plan)

    def forward(self, image: torch.Tensor):
        feats, saved = bw.forward_saving(self.weights.vgg(), self.plan, image)
        return tuple(feats[l] for l in self.plan.loss_layers) + tuple(saved[k] for k in self.plan.saved_keys)


class BackwardGraph(nn.Module):
    def __init__(self, vgg: VGG, plan: bw.BackwardPlan, conv_mode: str = EXPORT_CONV_BACKWARD):
        super().__init__()
        self.plan = plan
        self.conv_mode = conv_mode
        # the backward needs no bias; conv2d mode needs only the flipped weights
        self.weights = _Weights(vgg, plan, with_bias=False, flipped=conv_mode == "conv2d")

    @property
    def input_names(self) -> List[str]:
        return backward_input_names(self.plan)

    def forward(self, *inputs: torch.Tensor):
        p = self.plan
        na, ns = len(p.activation_layers), len(p.saved_keys)
        feats = dict(zip(p.activation_layers, inputs[:na]))
        saved = dict(zip(p.saved_keys, inputs[na:na + ns]))
        grads = dict(zip(p.loss_layers, inputs[na + ns:]))
        return bw.backward(self.weights.vgg(), p, feats, saved, grads, self.conv_mode, self.weights.flipped())


def example_image(plan: bw.BackwardPlan, batch: int = 1) -> torch.Tensor:
    """A traceable input: odd sides (so the dropped row/column is exercised) reaching every layer."""
    k = max((bw.pools_before(plan.model, l) for l in plan.loss_layers), default=0)
    side = 2 ** k
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, side + 3, side + 1, generator=g)


def _dynamic_axes(names: Sequence[str], specs: Dict[str, dict]) -> Dict[str, Dict[int, str]]:
    out = {}
    for n in names:
        shape = specs[n]["shape"]
        out[n] = {0: shape[0], 2: shape[2], 3: shape[3]}
    return out


def export_graphs(vgg: VGG, plan: bw.BackwardPlan, forward_path: str, backward_path: str,
                  opset: int = DEFAULT_OPSET, conv_mode: str = EXPORT_CONV_BACKWARD) -> None:
    """Trace and write both graphs (plain writes: callers make them atomic)."""
    specs = tensor_specs(plan)
    fwd = ForwardGraph(vgg, plan).eval()
    bwd = BackwardGraph(vgg, plan, conv_mode).eval()
    image = example_image(plan)
    with torch.no_grad():
        outs = fwd(image)
    out_by_name = dict(zip(fwd.output_names, outs))
    grad_of = {grad_name(l): l for l in plan.loss_layers}
    bwd_inputs = tuple(
        out_by_name[n] if n in out_by_name else torch.randn_like(out_by_name[grad_of[n]])
        for n in bwd.input_names
    )
    with warnings.catch_warnings():
        # Tracer warnings (Python ints from shapes, shape checks in kernels) and the
        # TorchScript exporter's deprecation notice: the graphs are checked after export.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fwd, (image,), forward_path, dynamo=False, opset_version=opset,
            input_names=["image"], output_names=fwd.output_names,
            dynamic_axes=_dynamic_axes(["image"] + fwd.output_names, specs), do_constant_folding=True,
        )
        torch.onnx.export(
            bwd, bwd_inputs, backward_path, dynamo=False, opset_version=opset,
            input_names=bwd.input_names, output_names=["grad_image"],
            dynamic_axes=_dynamic_axes(bwd.input_names + ["grad_image"], specs), do_constant_folding=True,
        )
