"""Find operations that would synchronise a GPU with the host, by running code on the CPU.

Two layers watch the code under test:
* a TorchDispatchMode sees every aten op: ``_local_scalar_dense`` (``.item()``, ``float(t)``,
  ``bool(t)``), ``nonzero`` / ``masked_select`` / ``unique`` (data-dependent output sizes),
  ``is_nonzero``, ``equal``, ``allclose``, ``lift_fresh`` (a tensor made from host data,
  which on a GPU is a host-to-device copy);
* a TorchFunctionMode sees the Python-level calls that move data to the host and that the
  dispatcher cannot tell apart on a CPU-only run: ``.cpu()``, ``.numpy()``, ``.tolist()``,
  ``.item()``, ``torch.tensor`` / ``as_tensor`` from host data, ``.to("cpu")``. On a CPU-only
  run host and device are one device, so ``.to`` is flagged only when its target is written
  as the string "cpu" (code meaning the host says so; code meaning the device passes its
  ``torch.device``, e.g. ``.to(self.device)``).
Ops that the CPU emulator runs on behalf of the device (its buffer poisoning and canary
checks) are skipped (``emulator.in_device_code()``); kernel launches are not torch ops.
"""
from __future__ import annotations

from typing import Callable, List

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from stylegrad.kernels import emulator

SYNC_ATEN = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "allclose", "masked_select", "unique_dim",
             "_unique", "_unique2", "unique_consecutive", "lift_fresh", "lift_fresh_copy", "repeat_interleave"}
HOST_FUNCS = {"cpu", "numpy", "tolist", "item", "tensor", "as_tensor", "__bool__", "__float__", "__int__",
              "__index__"}


class _Dispatch(TorchDispatchMode):
    def __init__(self, found: List[str]):
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in SYNC_ATEN and not emulator.in_device_code():
            self.found.append(f"aten::{name}")
        return func(*args, **(kwargs or {}))


class _Function(TorchFunctionMode):
    def __init__(self, found: List[str]):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if not emulator.in_device_code():
            to_host = name == "to" and any(isinstance(a, str) and a.startswith("cpu")
                                           for a in list(args[1:]) + list(kwargs.values()))
            if name in HOST_FUNCS or to_host:
                self.found.append(f"torch.{name}")
        return func(*args, **kwargs)


def host_syncs(fn: Callable[[], None]) -> List[str]:
    """Run ``fn`` and list the operations in it that would synchronise with the host."""
    found: List[str] = []
    with _Function(found), _Dispatch(found):
        fn()
    return found
