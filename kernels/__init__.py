"""stylegrad.kernels: the hot operations outside the convolutions.

Three layers, one name per operation:

* ``stylegrad.kernels.<op>`` -- pure-torch float32 implementation (``cpu.py``),
  used by the CPU backends; runs on any device.
* ``stylegrad.kernels.<op>_reference`` -- float64 reference (``reference.py``).
* ``stylegrad.kernels.cuda_ops.<op>`` -- the NVRTC-compiled CUDA kernel from
  ``kernels/<op>.cu``, same signature (plus optional output buffers).

Importing this package never needs a GPU or cuda-python; calling a CUDA
launcher without them raises :class:`KernelUnavailableError`.
"""

from . import cuda_ops, loader, registry
from .check import CheckResult, check_all, format_check_table
from .cpu import (
    adam_step_,
    clamp_,
    content_loss,
    gram,
    lbfgs_axpy_,
    lbfgs_dots,
    normalize,
    relu_backward_accumulate,
    style_feature_grad,
    style_loss,
    tv_loss,
)
from .loader import KernelCompileError, KernelUnavailableError
from .reference import (
    adam_step_reference,
    clamp_reference,
    content_loss_reference,
    gram_reference,
    lbfgs_axpy_reference,
    lbfgs_dots_reference,
    normalize_reference,
    relu_backward_accumulate_reference,
    style_feature_grad_reference,
    style_loss_reference,
    tv_loss_reference,
)

__all__ = [
    "CheckResult",
    "KernelCompileError",
    "KernelUnavailableError",
    "adam_step_",
    "adam_step_reference",
    "check_all",
    "clamp_",
    "clamp_reference",
    "content_loss",
    "content_loss_reference",
    "cuda_ops",
    "format_check_table",
    "gram",
    "gram_reference",
    "lbfgs_axpy_",
    "lbfgs_axpy_reference",
    "lbfgs_dots",
    "lbfgs_dots_reference",
    "loader",
    "normalize",
    "normalize_reference",
    "registry",
    "relu_backward_accumulate",
    "relu_backward_accumulate_reference",
    "style_feature_grad",
    "style_feature_grad_reference",
    "style_loss",
    "style_loss_reference",
    "tv_loss",
    "tv_loss_reference",
]
