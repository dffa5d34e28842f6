"""stylegrad.kernels: the hot operations outside the convolutions.

Three layers, one name per operation:

* ``stylegrad.kernels.<op>`` -- pure-torch float32 implementation (``torch_ops.py``),
  used by the CPU backends; runs on any device.
* ``stylegrad.kernels.<op>_reference`` -- float64 reference (``reference.py``).
* ``stylegrad.kernels.cuda_ops.<op>`` -- the NVRTC-compiled CUDA kernel from
  ``kernels/<op>.cu``, same signature (plus optional output buffers).

:func:`ops_for` chooses between the two implementations once, for a device, when a backend
is built. ``stylegrad.kernels.emulator`` runs the CUDA kernels on the CPU (same sources, g++)
for the tests, ``stylegrad kernels check --emulate`` and ``STYLEGRAD_EMULATE=1``.

Importing this package never needs a GPU, cuda-python or a C++ compiler; calling a CUDA
launcher without them raises :class:`KernelUnavailableError`.
"""

from types import ModuleType

import torch

from . import cuda_ops, loader, registry, torch_ops
from .check import CheckResult, check_all, format_check_table
from .loader import KernelCompileError, KernelUnavailableError
from .reference import (
    content_loss_reference,
    gram_reference,
    relu_backward_accumulate_reference,
    style_feature_grad_reference,
    style_loss_reference,
    tv_l1_loss_reference,
    tv_loss_reference,
)
from .torch_ops import (
    content_loss,
    gram,
    relu_backward_accumulate,
    style_feature_grad,
    style_loss,
    tv_l1_loss,
    tv_loss,
)

# The operations a backend takes from ``ops_for``: both modules define them with one signature.
BACKEND_OPS = ("gram", "style_loss", "style_feature_grad", "content_loss", "tv_loss", "relu_backward_accumulate")


def ops_for(device) -> ModuleType:
    """The kernel implementations for tensors on ``device``: ``cuda_ops`` (the CUDA kernels)
    where they can launch -- CUDA devices, and the CPU under the emulator -- else ``torch_ops``.

    Decided once, when a backend is built; a tensor that then reaches ``cuda_ops`` on another
    device or non-contiguous is an error, not a fallback."""
    return cuda_ops if loader.device_problem(torch.device(device)) is None else torch_ops


__all__ = [
    "BACKEND_OPS",
    "CheckResult",
    "KernelCompileError",
    "KernelUnavailableError",
    "check_all",
    "content_loss",
    "content_loss_reference",
    "cuda_ops",
    "format_check_table",
    "gram",
    "gram_reference",
    "loader",
    "ops_for",
    "registry",
    "relu_backward_accumulate",
    "relu_backward_accumulate_reference",
    "style_feature_grad",
    "style_feature_grad_reference",
    "style_loss",
    "style_loss_reference",
    "torch_ops",
    "tv_l1_loss",
    "tv_l1_loss_reference",
    "tv_loss",
    "tv_loss_reference",
]
