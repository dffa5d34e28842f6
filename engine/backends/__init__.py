"""Backends: features of the image -> losses and their feature gradients -> image gradient.

``reference``   PyTorch autograd end to end: the oracle of the tests, the rival of benchmarks.
``torch``       hand-written backward through VGG in plain torch ops (CPU or CUDA).
``onnxruntime`` exported forward/backward graphs run by ONNX Runtime.
"""
from .base import Backend, Evaluation, PhaseTimer
from .registry import available_backends, create_backend, resolve_backend

__all__ = ["Backend", "Evaluation", "PhaseTimer", "available_backends", "create_backend", "resolve_backend"]
