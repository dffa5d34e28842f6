"""Compile, cache and launch stylegrad's CUDA kernels.

We use NVIDIA's cuda-python (``cuda.core`` on top of ``cuda.bindings`` and the
``nvidia-cuda-nvrtc`` wheel) rather than pycuda: it is NVIDIA's maintained
binding, ships binary wheels on PyPI, needs no nvcc or CUDA toolkit at run
time (NVRTC compiles in-process), and is what the TensorRT samples use.

Flow: the source of ``kernels/<name>.cu`` (with ``common.cuh`` prepended as
text, so NVRTC needs no include path) is compiled with NVRTC to a cubin for
the running GPU's ``sm_XY``. Cubins are cached on disk in the ``kernels``
folder of stylegrad's cache (``stylegrad.io.fileio.cache_dir``), keyed by the
source hash, compile options, architecture and NVRTC version, and written
atomically (``stylegrad.io.fileio.atomic_write``) so concurrent processes never
see a half-written file. Kernels are launched on PyTorch's current CUDA stream
with raw data pointers, so they order with cuDNN/cuBLAS work and can be
captured in a CUDA graph.

Nothing here imports cuda-python at module import time; a machine without it
(or without a GPU) raises :class:`KernelUnavailableError` on first use.

The loader is also where the CPU emulator plugs in: with ``STYLEGRAD_EMULATE=1`` (or inside
``stylegrad.kernels.emulator.session()``) CPU tensors count as a kernel device,
:func:`get_kernel` / :func:`launch` build and run the same sources with g++
(``kernels/emulator/``), :func:`sm_count` answers an H100 SXM's 132 and :func:`empty`
allocates NaN-poisoned buffers with canaries. The launchers in ``cuda_ops`` do not know which
of the two they are talking to.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
from pathlib import Path
from typing import Any, Sequence

from stylegrad.io.fileio import CACHE_ENV, atomic_write, cache_dir as _cache_root  # noqa: F401 (CACHE_ENV: tests)

from .errors import KernelCompileError, KernelUnavailableError
from .registry import CSRC, SOURCES, read_source

# Compile options, also part of the cache key. C++17 is NVRTC's default; we
# state it so a future default change cannot silently alter cached binaries.
_OPTIONS = {"std": "c++17"}


def _core():
    try:
        import cuda.core as core
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise KernelUnavailableError(
            f"cuda-python (cuda-core) is not importable: {exc}; "
            "install the 'cuda' extra or use the CPU implementations"
        ) from None
    return core


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library cuda-python loads."""
    _core()
    try:
        from cuda.bindings import nvrtc

        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:
        raise KernelUnavailableError(f"NVRTC is not loadable: {exc}") from None
    if int(err) != 0:
        raise KernelUnavailableError(f"nvrtcVersion failed with {err}")
    return int(major), int(minor)


def compile_source(name: str, arch: str) -> tuple[bytes, str]:
    """Compile source ``name`` for ``arch`` (e.g. "sm_90"), bypassing the cache.

    Returns (cubin, log); the log is NVRTC's text with warnings, "" when clean.
    Raises KernelCompileError on a compile error.
    """
    core = _core()
    source = read_source(name)
    log = io.StringIO()
    options = core.ProgramOptions(arch=arch, name=f"{name}.cu", **_OPTIONS)
    try:
        program = core.Program(source, "c++", options)
        obj = program.compile("cubin", logs=log)
    except Exception as exc:
        raise KernelCompileError(f"NVRTC failed on {name}.cu for {arch}: {exc}") from None
    return bytes(obj.code), log.getvalue().replace("\x00", "").strip()


def cache_dir() -> Path:
    return _cache_root("kernels")


def cache_path(name: str, arch: str) -> Path:
    major, minor = nvrtc_version()
    key = hashlib.sha256()
    for part in (read_source(name), repr(sorted(_OPTIONS.items())), arch, f"{major}.{minor}"):
        key.update(part.encode())
        key.update(b"\0")
    return cache_dir() / f"{name}-{arch}-nvrtc{major}.{minor}-{key.hexdigest()[:20]}.cubin"


def cached_cubin(name: str, arch: str) -> bytes:
    """Cubin for (name, arch), from the disk cache or compiled and stored."""
    path = cache_path(name, arch)
    try:
        data = path.read_bytes()
        if data:
            return data
    except OSError:
        pass
    cubin, _log = compile_source(name, arch)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(cubin))
    except OSError:
        pass  # a read-only or full cache is not fatal: we hold the cubin in memory
    return cubin


_lock = threading.Lock()
_kernels: dict[tuple[str, str, int], Any] = {}
_streams: dict[int, Any] = {}
_driver_ok: set[int] = set()

# A cubin from NVRTC major N needs a driver of CUDA N or newer; within a major, SASS cubins
# run on older minor drivers (CUDA's minor-version compatibility).
_INSTALL_HINT = {12: "pip install 'stylegrad[cuda12]'", 13: "pip install 'stylegrad[cuda13]' (needs driver R580+)"}


def driver_version() -> tuple[int, int]:
    """(major, minor) CUDA version the installed NVIDIA driver supports."""
    _core()
    try:
        from cuda.bindings import driver

        err, version = driver.cuDriverGetVersion()
    except Exception as exc:
        raise KernelUnavailableError(f"the CUDA driver is not loadable: {exc}") from None
    if int(err) != 0:
        raise KernelUnavailableError(f"cuDriverGetVersion failed with {err}")
    return int(version) // 1000, (int(version) % 1000) // 10


def check_driver() -> None:
    """Raise a one-line KernelUnavailableError when the driver is older than NVRTC's major."""
    (dmaj, dmin), (nmaj, nmin) = driver_version(), nvrtc_version()
    if dmaj < nmaj:
        hint = _INSTALL_HINT.get(dmaj, f"an NVRTC {dmaj}.x matching the driver")
        raise KernelUnavailableError(
            f"the NVIDIA driver supports CUDA {dmaj}.{dmin} but NVRTC is {nmaj}.{nmin}, whose cubins need a "
            f"CUDA {nmaj} driver: {hint}, or upgrade the driver"
        )


def emulating() -> bool:
    """True when CPU tensors run the CUDA kernels through the emulator."""
    from . import emulator

    return emulator.enabled()


def device_problem(device) -> str | None:
    """Why kernels cannot be launched on ``device`` (None when they can)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return None
    if dev.type == "cpu" and emulating():
        return None
    if dev.type == "cpu":
        return "CUDA kernels need a CUDA GPU (or STYLEGRAD_EMULATE=1 for the CPU emulator)"
    return f"CUDA kernels cannot run on device type {dev.type!r}"


def _is_emulated(device) -> bool:
    import torch

    return torch.device(device).type == "cpu" and emulating()


def sm_count(device) -> int:
    """Multiprocessors of ``device``, for grid sizing; the emulator models an H100 SXM (132)."""
    if _is_emulated(device):
        from . import emulator

        return emulator.SM_COUNT
    return _cuda_sm_count(_device_index(device))


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    import torch

    return torch.cuda.get_device_properties(index).multi_processor_count


def empty(shape, dtype, device):
    """An uninitialised kernel buffer on ``device`` (emulated: NaN-poisoned, with canaries)."""
    import torch

    if _is_emulated(device):
        from . import emulator

        return emulator.empty(shape, dtype)
    return torch.empty(shape, dtype=dtype, device=device)


def _device_index(device) -> int:
    import torch

    if not torch.cuda.is_available():
        raise KernelUnavailableError("CUDA kernels need a CUDA GPU, and torch.cuda.is_available() is False")
    dev = torch.device(device)
    if dev.type != "cuda":
        raise KernelUnavailableError(f"CUDA kernels need CUDA tensors, got device {dev}")
    return torch.cuda.current_device() if dev.index is None else dev.index


def device_arch(device) -> str:
    import torch

    major, minor = torch.cuda.get_device_capability(_device_index(device))
    return f"sm_{major}{minor}"


def get_kernel(source: str, symbol: str, device) -> Any:
    """The kernel ``symbol`` of ``source`` for ``device``: a cuda.core Kernel, or the
    emulator's when ``device`` is the CPU under emulation."""
    if _is_emulated(device):
        from . import emulator

        return emulator.get_kernel(source, symbol)
    index = _device_index(device)
    key = (source, symbol, index)
    kernel = _kernels.get(key)
    if kernel is None:
        core = _core()
        with _lock:
            kernel = _kernels.get(key)
            if kernel is None:
                if index not in _driver_ok:
                    check_driver()
                    _driver_ok.add(index)
                _make_current(index)
                obj = core.ObjectCode.from_cubin(cached_cubin(source, device_arch(device)), name=source)
                for entry in SOURCES[source].entry_points:
                    _kernels[(source, entry, index)] = obj.get_kernel(entry)
                if key not in _kernels:
                    raise ValueError(f"{source}.cu has no entry point {symbol!r}")
                kernel = _kernels[key]
    return kernel


def _make_current(index: int) -> None:
    # cuda.core launches in the thread's current context; PyTorch uses the device's primary
    # context, which Device.set_current() binds. Done on every launch, never cached: the
    # current context is per thread and anything (torch.cuda.set_device, another library) may
    # have changed it since our last launch.
    _core().Device(index).set_current()


def launch(kernel: Any, grid: Sequence[int] | int, block: int, args: Sequence[Any], device) -> None:
    """Launch ``kernel`` on PyTorch's current stream of ``device``, under that device.

    ``args``: Python ints are passed as pointers (use ``tensor.data_ptr()``);
    scalars must be numpy scalars (np.int32, np.int64, np.float32, np.float64) so their C
    type is explicit.
    """
    grid = tuple(grid) if not isinstance(grid, int) else (grid,)
    if _is_emulated(device):
        from . import emulator

        emulator.launch(kernel, grid, block, args)
        return
    import torch

    core = _core()
    index = _device_index(device)
    _make_current(index)
    handle = int(torch.cuda.current_stream(index).cuda_stream)
    stream = _streams.get(handle)
    if stream is None:
        # We wrap, not own, PyTorch's stream. A handle value reused by a later
        # stream still denotes a valid stream, so caching by value is safe.
        stream = _streams.setdefault(handle, core.Stream.from_handle(handle))
    config = core.LaunchConfig(grid=grid, block=block)
    core.launch(stream, config, kernel, *args)
