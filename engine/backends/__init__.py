"""Backends: features of the image -> losses and their feature gradients -> image gradient.

``reference``   PyTorch autograd end to end: the oracle of the tests, the rival of benchmarks.
``torch``       hand-written backward through VGG in plain torch ops (CPU or CUDA; fp32, bf16).
``onnxruntime`` exported forward/backward graphs (``stylegrad.export``) run by ONNX Runtime.
``cuda``        the ``torch`` backend's graph plus the NVRTC kernels of ``stylegrad.kernels``
                and a capturable optimiser, the whole iteration replayed from one CUDA graph.

``registry`` maps these names to classes and is the only place that decides which backend runs
which precision on which device (``resolve_backend``).
"""
from stylegrad.backends.base import Backend, Evaluation, PhaseTimer
from stylegrad.backends.registry import (available_backends, backend_names, backend_status, create_backend, resolve_backend,
                       resolve_backend_and_precision, resolve_precision)

__all__ = ["Backend", "Evaluation", "PhaseTimer", "available_backends", "backend_names", "backend_status",
           "create_backend", "resolve_backend", "resolve_backend_and_precision", "resolve_precision"]
