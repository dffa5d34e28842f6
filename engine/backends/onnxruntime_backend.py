"""Backend ``onnxruntime``: the exported forward/backward graphs run by ONNX Runtime.

The graphs come from the export cache (``stylegrad.export.cache``: exported once per weights +
model + pooling + loss layers, reused across runs); the two InferenceSessions are built once
per backend and reused for every evaluation. Inputs and outputs go through IO binding straight
into/out of torch tensors (no copies); the losses between the two graphs come from the shared
objective (``SplitBackend.evaluate``).

Sizes: the graphs have dynamic batch, height and width, but a graph is only valid for images
that reach its deepest layer (shorter side >= 2**pools). For a smaller image the backend
asks for a second pair of graphs for the layers that image does reach (typically only for
tiny test images or small style images); an image that reaches no loss layer gives zero loss
and gradient, as in every backend.

Devices: CPU (CPUExecutionProvider) is what is tested. With ``onnxruntime-gpu`` installed and a
CUDA device, the sessions use TensorRT (if available) then CUDA providers and bind CUDA device
pointers of torch tensors; that path is written to the documented ORT API but UNVERIFIED here
(no GPU, no onnxruntime-gpu in development).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from stylegrad.backends.base import SplitBackend
from stylegrad.errors import BackendUnavailableError
from stylegrad.model import vgg as vggmod
from stylegrad.terms import backward as bw

_NP_DTYPES = {"float32": "float32", "bool": "bool_", "uint8": "uint8"}
_TORCH_DTYPES = {"float32": torch.float32, "bool": torch.bool, "uint8": torch.uint8}


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailableError(f"backend 'onnxruntime' needs the onnxruntime package: {e}") from None
    return onnxruntime


def _session_options(ort, threads: int):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3   # errors only: library code does not write to the terminal
    # Torch (the losses) runs between the two graphs on the same cores: ORT's worker threads
    # must not keep spinning after a run.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _providers(ort, device: torch.device) -> List:
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    idx = device.index if device.index is not None else torch.cuda.current_device()
    avail = ort.get_available_providers()
    providers: List = []
    if "TensorrtExecutionProvider" in avail:   # UNVERIFIED: no TensorRT in development
        providers.append(("TensorrtExecutionProvider", {"device_id": idx}))
    providers.append(("CUDAExecutionProvider", {"device_id": idx}))
    return providers


@dataclass
class _GraphPair:
    plan: bw.BackwardPlan
    forward: object            # onnxruntime.InferenceSession
    backward: object
    specs: Dict[str, dict]     # tensor name -> dtype, shape, pools
    directory: Path
    grad_inputs: Dict[str, str]   # backward input name -> loss layer


@dataclass
class OrtSaved:
    pair: _GraphPair
    tensors: Dict[str, torch.Tensor]   # every forward output (features and saved_*)
    image_shape: Tuple[int, int, int, int]


class OnnxRuntimeBackend(SplitBackend):
    name = "onnxruntime"

    def __init__(self, vgg, config, device, cache_dir: Optional[Path] = None):
        super().__init__(vgg.to(device="cpu", dtype=torch.float32), config, device)
        self.ort = _ort()
        self.cache_dir = cache_dir   # None: stylegrad.export.cache.cache_root()
        self.plan = bw.make_plan(self.vgg.model, self.vgg.pool, config.loss_layers())
        self.threads = max(1, torch.get_num_threads())   # torch's default: physical cores
        self._pairs: Dict[Tuple[str, ...], _GraphPair] = {}
        self._torch_vgg = None   # device copy for the torch fallback in features()

    @classmethod
    def supports(cls, device: torch.device) -> Tuple[bool, str]:
        device = torch.device(device)
        try:
            ort = _ort()
            import onnx  # noqa: F401  (the exporter writes ONNX protos)
        except (BackendUnavailableError, ImportError) as e:
            return False, str(e)
        avail = ort.get_available_providers()
        if device.type == "cpu":
            if "CPUExecutionProvider" in avail:
                return True, ""
            return False, "onnxruntime has no CPUExecutionProvider"
        if device.type == "cuda":
            if "CUDAExecutionProvider" in avail and torch.cuda.is_available():
                return True, "UNVERIFIED: CUDA provider path not tested in development"
            return False, ("backend 'onnxruntime' on CUDA needs onnxruntime-gpu (CUDAExecutionProvider) "
                           "and a CUDA build of torch")
        return False, f"backend 'onnxruntime' does not support device type {device.type!r}"

    # -- graphs ----------------------------------------------------------------------------------
    def _pair(self, height: int, width: int) -> Optional[_GraphPair]:
        layers = bw.reachable_layers(self.plan.model, self.plan.loss_layers, height, width)
        if not layers:
            return None
        pair = self._pairs.get(layers)
        if pair is None:
            from stylegrad.export.cache import cached_export
            from stylegrad.export.onnx_graphs import grad_name

            plan = self.plan if layers == self.plan.loss_layers else bw.make_plan(self.plan.model, self.plan.pool, layers)
            export = cached_export(self.vgg, plan, self.cache_dir)
            so = _session_options(self.ort, self.threads)
            providers = _providers(self.ort, self.device)
            fwd = self.ort.InferenceSession(str(export.forward_path), so, providers=providers)
            bwd = self.ort.InferenceSession(str(export.backward_path), so, providers=providers)
            pair = _GraphPair(plan, fwd, bwd, export.specs, export.directory,
                              {grad_name(l): l for l in plan.loss_layers})
            self._pairs[layers] = pair
        return pair

    # -- binding -----------------------------------------------------------------------------------
    def _bind_kwargs(self, t: torch.Tensor, dtype: str) -> dict:
        import numpy as np

        dev = "cuda" if t.device.type == "cuda" else "cpu"
        return dict(device_type=dev, device_id=t.device.index or 0, element_type=getattr(np, _NP_DTYPES[dtype]),
                    shape=tuple(t.shape), buffer_ptr=t.data_ptr())

    def _bind_input(self, io, name: str, t: torch.Tensor, dtype: str) -> torch.Tensor:
        t = t.detach().to(self.device, _TORCH_DTYPES[dtype]).contiguous()
        io.bind_input(name, **self._bind_kwargs(t, dtype))
        return t   # the caller keeps it alive until the run is over

    def _run_forward(self, pair: _GraphPair, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        n, _, h, w = image.shape
        io = pair.forward.io_binding()
        image = self._bind_input(io, "image", image, "float32")
        outs: Dict[str, torch.Tensor] = {}
        for name in [o.name for o in pair.forward.get_outputs()]:
            spec = pair.specs[name]
            k = 2 ** spec["pools"]
            t = torch.empty((n, spec["shape"][1], h // k, w // k), dtype=_TORCH_DTYPES[spec["dtype"]],
                            device=self.device)
            io.bind_output(name, **self._bind_kwargs(t, spec["dtype"]))
            outs[name] = t
        pair.forward.run_with_iobinding(io)
        return outs

    # -- Backend API ------------------------------------------------------------------------------
    def features(self, image: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Features from the forward graph when ``layers`` are among this backend's loss layers;
        other layers (e.g. a probe for zero-weight layers) come from the torch forward."""
        layers = list(layers)
        if not layers:
            return {}
        if not set(layers) <= set(self.plan.loss_layers):
            if self._torch_vgg is None:
                self._torch_vgg = self.vgg.to(self.device)
            with torch.no_grad():
                return vggmod.forward(self._torch_vgg, image.to(self.device, torch.float32), layers)
        pair = self._pair(image.shape[-2], image.shape[-1])
        if pair is None:
            return {}
        outs = self._run_forward(pair, image)
        return {l: outs[l] for l in layers if l in outs}

    def forward_saving(self, image: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], Optional[OrtSaved]]:
        pair = self._pair(image.shape[-2], image.shape[-1])
        if pair is None:
            return {}, None
        outs = self._run_forward(pair, image)
        feats = {l: outs[l] for l in pair.plan.loss_layers}
        return feats, OrtSaved(pair, outs, tuple(image.shape))

    def backward(self, saved: OrtSaved, feature_grads: Dict[str, torch.Tensor]) -> torch.Tensor:
        pair = saved.pair
        io = pair.backward.io_binding()
        keep = []
        for inp in pair.backward.get_inputs():
            name = inp.name
            layer = pair.grad_inputs.get(name)
            if layer is not None:
                g = feature_grads.get(layer)
                if g is None:   # a loss layer whose term is zero this evaluation
                    g = torch.zeros_like(saved.tensors[layer])
                keep.append(self._bind_input(io, name, g, "float32"))
            else:
                keep.append(self._bind_input(io, name, saved.tensors[name], pair.specs[name]["dtype"]))
        grad = torch.empty(saved.image_shape, dtype=torch.float32, device=self.device)
        io.bind_output("grad_image", **self._bind_kwargs(grad, "float32"))
        pair.backward.run_with_iobinding(io)
        return grad

    def close(self) -> None:
        self._pairs.clear()
        self._torch_vgg = None
