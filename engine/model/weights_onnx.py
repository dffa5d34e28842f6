"""VGG convolution weights read from an ONNX graph (``--weights FILE.onnx``).

The graph is walked in its (topological) node order. Every ``Conv`` must be a 3x3, stride 1,
pad 1, ungrouped convolution whose weight (and bias, if any) is a constant; ``MaxPool`` /
``AveragePool`` nodes mark the blocks. The sequence of convolutions and pools must be the VGG
layout of the requested model (a trailing classifier -- MatMul, Gemm, Flatten, Softmax... -- is
ignored), and each convolution's shape must match. Anything else is a :class:`WeightsError`
naming what did not match.

The input convention cannot be read from the weights. :func:`preprocess_hint` guesses it
from the exporter: Keras models (``tf2onnx``/``keras2onnx``; Keras' VGG16/VGG19 take the Caffe
convention) -> ``caffe``; PyTorch exports -> ``torchvision``; anything else -> unknown (the
caller asks for ``--preprocess``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from stylegrad.errors import WeightsError
from stylegrad.model.vgg import layer_specs

_POOLS = ("MaxPool", "AveragePool")
# tf2onnx / keras2onnx: Keras' VGG16/VGG19 ImageNet weights are ported from Caffe and take BGR,
# 0..255, mean-subtracted input (keras.applications.vgg16.preprocess_input, mode "caffe").
_CAFFE_PRODUCERS = ("tf2onnx", "keras2onnx")
_TORCH_PRODUCERS = ("pytorch",)


def _load(path: Path):
    try:
        import onnx
    except ImportError as e:  # onnx is a dependency; this only guards broken installs
        raise WeightsError(f"reading {path} needs the onnx package: {e}") from None
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError, ValueError, ... for corrupt files
        raise WeightsError(f"cannot read {path} as an ONNX model: {type(e).__name__}") from None


def _constants(model) -> Dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _as_tensor(a: np.ndarray, what: str, path: Path) -> torch.Tensor:
    if not np.issubdtype(a.dtype, np.floating):
        raise WeightsError(f"{what} in {path} is {a.dtype}, not floating point (quantised graphs are not supported)")
    t = torch.tensor(np.asarray(a, dtype=np.float32))   # a copy: the array may be read-only
    if not torch.isfinite(t).all():
        raise WeightsError(f"{what} in {path} holds NaN or inf values")
    return t


def _check_conv(node, w: np.ndarray, path: Path, k: int) -> None:
    at = _attrs(node)
    where = f"convolution {k + 1} ({node.name or 'unnamed'}) of {path}"
    if w.ndim != 4 or tuple(w.shape[2:]) != (3, 3):
        raise WeightsError(f"{where} has a {tuple(w.shape)} kernel, VGG uses 3x3")
    if any(s != 1 for s in at.get("strides", [1, 1])) or any(d != 1 for d in at.get("dilations", [1, 1])):
        raise WeightsError(f"{where} has strides {at.get('strides')} / dilations {at.get('dilations')}, VGG uses 1")
    if at.get("group", 1) != 1:
        raise WeightsError(f"{where} is grouped, VGG's are not")
    pads = list(at.get("pads", []))
    auto = at.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if not (pads == [1, 1, 1, 1] or auto in ("SAME_UPPER", "SAME_LOWER")):
        raise WeightsError(f"{where} pads {pads or auto}, VGG pads 1 on each side")


def read_onnx_convs(path: Path) -> Tuple[List[Tuple[np.ndarray, Optional[np.ndarray]]], str, str]:
    """(weight, bias) of every Conv in graph order, the conv/pool layout as a string ("CCP..."),
    and the producer name."""
    model = _load(path)
    consts = _constants(model)
    convs: List[Tuple[np.ndarray, Optional[np.ndarray]]] = []
    layout = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            if len(node.input) < 2 or node.input[1] not in consts:
                raise WeightsError(f"convolution {len(convs) + 1} of {path} takes its weight from another node, "
                                   "not a constant: not a plain VGG graph")
            w = consts[node.input[1]]
            b = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 2 and node.input[2] and b is None:
                raise WeightsError(f"convolution {len(convs) + 1} of {path} takes its bias from another node")
            _check_conv(node, w, path, len(convs))
            convs.append((w, b))
            layout.append("C")
        elif node.op_type in _POOLS:
            layout.append("P")
    return convs, "".join(layout), model.producer_name or ""


def _vgg_layout(model: str) -> str:
    return "".join("C" if s.kind == "conv" else "P" for s in layer_specs(model) if s.kind != "relu")


def onnx_state(path: Path, model: str) -> Tuple[Dict[str, Tuple[torch.Tensor, torch.Tensor]], Optional[str]]:
    """conv layer name -> (weight, bias) for ``model`` from an ONNX file, checked; and the input
    convention the exporter suggests (:func:`preprocess_hint`)."""
    convs, layout, producer = read_onnx_convs(path)
    want = _vgg_layout(model)
    if layout not in (want, want[:-1]):   # the last pool may be absent (a features-only export)
        n = len(convs)
        other = [m for m in ("vgg16", "vgg19") if m != model and layout in (_vgg_layout(m), _vgg_layout(m)[:-1])]
        hint = f": it looks like a {other[0].upper()}, use --model {other[0]}" if other else ""
        raise WeightsError(f"{path} is not a {model.upper()} graph ({n} 3x3 convolutions in the layout "
                           f"{layout or 'none'}, expected {want}){hint}")
    out: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    specs = [s for s in layer_specs(model) if s.kind == "conv"]
    for s, (w, b) in zip(specs, convs):
        expect = (s.out_channels, s.in_channels, 3, 3)
        if tuple(w.shape) != expect:
            raise WeightsError(f"{s.name} in {path} has shape {tuple(w.shape)}, expected {expect} for {model}")
        if b is not None and tuple(b.shape) != (s.out_channels,):
            raise WeightsError(f"{s.name} bias in {path} has shape {tuple(b.shape)}, expected ({s.out_channels},)")
        wt = _as_tensor(w, f"{s.name} weight", path)
        bt = _as_tensor(b, f"{s.name} bias", path) if b is not None else torch.zeros(s.out_channels)
        out[s.name] = (wt, bt)
    return out, preprocess_hint(producer)


def preprocess_hint(producer: str) -> Optional[str]:
    """'caffe' / 'torchvision' from the exporter's name, or None when it cannot tell."""
    producer = producer.lower()
    if any(p in producer for p in _CAFFE_PRODUCERS):
        return "caffe"
    if any(p in producer for p in _TORCH_PRODUCERS):
        return "torchvision"
    return None
