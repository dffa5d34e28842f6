"""The one place that maps backend names to implementations, decides which backend runs which
precision on which device, and picks one for ``auto``.

Backends only declare what they can do: ``precisions`` (class attribute) and
``supports(device) -> (ok, why)``. :func:`resolve_backend` is the only compatibility check; the
Stylizer, ``stylegrad bench`` and ``stylegrad info`` ask it (or :func:`backend_status`).
Precision problems are :class:`ConfigError`; a backend that is missing or cannot use the device
is :class:`BackendUnavailableError`.
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Optional, Tuple

import torch

from stylegrad.errors import BackendUnavailableError, ConfigError

# name -> (module, class). Imported lazily so a missing optional dependency only matters
# when that backend is asked for.
_BACKENDS: Dict[str, Tuple[str, str]] = {
    "reference": ("stylegrad.backends.reference", "ReferenceBackend"),
    "torch": ("stylegrad.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("stylegrad.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "cuda": ("stylegrad.backends.cuda_backend", "CudaBackend"),
}

# Precisions tied to a device type whatever the backend: (device types, why).
_PRECISION_DEVICES = {"tf32": (("cuda",), "TF32 is a GPU tensor-core mode")}

# Order `auto` tries per device type. CPU, measured at 256^2 fp32 (bench/results/cpu-256-b1.json):
# onnxruntime 1.27x and torch 1.24x the reference, within run-to-run noise of each other; torch
# first as it needs no export step and also runs bf16. CUDA: the `cuda` backend joins `auto` once
# its GPU tests have passed on a GPU; until then (no GPU in any session so far) it must be asked
# for by name.
_AUTO_ORDER = {
    "cpu": ["torch", "onnxruntime", "reference"],
    "cuda": ["torch", "reference"],
}


def backend_names() -> Tuple[str, ...]:
    """Every backend, in the order the documentation lists them."""
    return tuple(_BACKENDS)


def _load(name: str):
    if name not in _BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected one of {', '.join(_BACKENDS)}")
    mod, cls = _BACKENDS[name]
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise BackendUnavailableError(f"backend {name!r} is not available: {e}") from None
    return getattr(module, cls)


def _declared_precisions(name: str) -> Tuple[str, ...]:
    return tuple(getattr(_load(name), "precisions", ("fp32",)))


def backend_status(name: str, device: torch.device) -> Tuple[bool, str]:
    """(usable, reason) for a backend on a device, whatever the precision."""
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


def _device_problem(device: torch.device, precision: str) -> str:
    """Why no backend can run ``precision`` on ``device`` ("" when some might)."""
    tied = _PRECISION_DEVICES.get(precision)
    if tied is not None and device.type not in tied[0]:
        return f"--precision {precision} needs --device {' or '.join(tied[0])} ({tied[1]})"
    return ""


def _precision_problem(name: str, precision: str) -> str:
    """Why backend ``name`` cannot run ``precision`` ("" when it can)."""
    declared = _declared_precisions(name)
    if precision in declared:
        return ""
    others = []
    for n in _BACKENDS:
        try:
            if precision in _declared_precisions(n):
                others.append(n)
        except BackendUnavailableError:
            pass
    return f"--precision {precision} needs --backend {' or '.join(others)}; backend {name} runs in {', '.join(declared)}"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CPU with AVX512_BF16 or AMX (oneDNN's bf16
    convolutions and GEMMs; without them bf16 is emulated and slower than fp32), a CUDA GPU of
    compute capability 8.0 or newer (bf16 tensor cores)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)
    return False


# --precision auto stays fp32 below this output size (longest side, px): bf16's rounding (8 bits)
# is then as large as what the optimiser is resolving -- measured: a 12 px run diverged in 2
# iterations, 64 px white-noise runs ended 6% above fp32, and on trained VGG16 at 128 px 100
# iterations ended 3.1% above fp32 (scored in fp32) -- while at 256 px runs end
# within 2% of fp32 (tests/test_precision.py, bench/results).
AUTO_BF16_MIN_SIZE = 256


def resolve_precision(precision: str, backend: str, device: torch.device, size: Optional[int] = None) -> str:
    """The precision a run uses: ``precision`` itself, or for ``auto`` bf16 when the device has
    native bf16, ``backend`` (a resolved name) runs it and the output (``size``, its longest
    side) is at least AUTO_BF16_MIN_SIZE px, else fp32. bf16 keeps the loss, the Gram matrices,
    the image and the optimiser in fp32 (README "Backends and precision")."""
    if precision != "auto":
        return precision
    if size is not None and size < AUTO_BF16_MIN_SIZE:
        return "fp32"
    if native_bf16(device) and "bf16" in _declared_precisions(backend):
        return "bf16"
    return "fp32"


def resolve_backend_and_precision(name: str, device: torch.device, precision: str,
                                  size: Optional[int] = None) -> Tuple[str, str]:
    """(backend, precision) a run uses for ``--backend name --precision precision`` at output
    size ``size`` (longest side; None: any)."""
    backend = resolve_backend(name, device, precision)
    return backend, resolve_precision(precision, backend, device, size)


def resolve_backend(name: str, device: torch.device, precision: str = "fp32") -> str:
    """The backend that runs for ``--backend name`` (or ``auto``) on ``device`` at
    ``precision``; raises when none can. The only place these rules are checked."""
    device = torch.device(device)
    if precision == "auto":         # every backend runs fp32, the fallback of auto
        precision = "fp32"
    problem = _device_problem(device, precision)
    if problem:
        raise ConfigError(problem)
    if name != "auto":
        ok, why = backend_status(name, device)
        if not ok:
            raise BackendUnavailableError(why or f"backend {name!r} does not support device {device}")
        problem = _precision_problem(name, precision)
        if problem:
            raise ConfigError(problem)
        return name
    for cand in _AUTO_ORDER.get(device.type, ["reference"]):
        if backend_status(cand, device)[0] and not _precision_problem(cand, precision):
            return cand
    raise ConfigError(f"no backend runs --precision {precision} on {device}")


def create_backend(name: str, vgg, config, device):
    name, precision = resolve_backend_and_precision(name, device, config.precision, config.size)
    if precision != config.precision:
        config = config.replace(precision=precision)
    return _load(name)(vgg, config, torch.device(device))
