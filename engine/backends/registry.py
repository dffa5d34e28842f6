"""The one place that maps backend names to implementations and picks one for ``auto``."""
from __future__ import annotations

import importlib
from typing import Dict, List, Tuple

import torch

from ..errors import BackendUnavailableError

# name -> (module, class). Imported lazily so a missing optional dependency only matters
# when that backend is asked for.
_BACKENDS: Dict[str, Tuple[str, str]] = {
    "reference": ("stylegrad.backends.reference", "ReferenceBackend"),
    "torch": ("stylegrad.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("stylegrad.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "cuda": ("stylegrad.backends.cuda_backend", "CudaBackend"),
}

# Order `auto` tries per device type. CPU, measured at 256^2 fp32 (bench/results/cpu-256-b1.json):
# onnxruntime 1.27x and torch 1.24x the reference, within run-to-run noise of each other; torch
# first as it needs no export step and also runs bf16. CUDA: the `cuda` backend joins `auto` once
# its GPU tests have passed on a GPU; until then (no GPU in any session so far) it must be asked
# for by name.
_AUTO_ORDER = {
    "cpu": ["torch", "onnxruntime", "reference"],
    "cuda": ["torch", "reference"],
}


def _load(name: str):
    if name not in _BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected one of {', '.join(_BACKENDS)}")
    mod, cls = _BACKENDS[name]
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise BackendUnavailableError(f"backend {name!r} is not available: {e}") from None
    return getattr(module, cls)


def backend_status(name: str, device: torch.device) -> Tuple[bool, str]:
    """(usable, reason) for a backend on a device."""
    try:
        cls = _load(name)
    except BackendUnavailableError as e:
        return False, str(e)
    check = getattr(cls, "supports", None)
    if check is None:
        return True, ""
    return check(torch.device(device))


def available_backends(device: torch.device) -> List[str]:
    return [n for n in _BACKENDS if backend_status(n, device)[0]]


def backend_precisions(name: str) -> tuple:
    return getattr(_load(name), "precisions", ("fp32",))


def resolve_backend(name: str, device: torch.device, precision: str = "fp32") -> str:
    device = torch.device(device)
    if name != "auto":
        ok, why = backend_status(name, device)
        if not ok:
            raise BackendUnavailableError(why or f"backend {name!r} does not support device {device}")
        return name
    for cand in _AUTO_ORDER.get(device.type, ["reference"]):
        if backend_status(cand, device)[0] and precision in backend_precisions(cand):
            return cand
    raise BackendUnavailableError(f"no backend runs --precision {precision} on {device}")


def create_backend(name: str, vgg, config, device):
    name = resolve_backend(name, device, config.precision)
    return _load(name)(vgg, config, torch.device(device))
