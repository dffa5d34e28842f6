"""A CPU emulator for stylegrad's CUDA kernels: the same sources, compiled by g++, run on CPU tensors.

The text NVRTC compiles for a GPU (``loader.read_source``: common.cuh + ``<name>.cu``) is
compiled here by the host C++ compiler between ``cuda_emu.h`` (the CUDA language surface:
``threadIdx``, ``__shared__``, ``__syncthreads``, warp shuffles, atomics, 16-bit float
conversions) and ``runtime.inc`` (the scheduler: each thread of a block is a fiber that runs to
its next barrier; blocks run one after another). The shared object is cached by the hash of
everything that goes into it and loaded with ctypes.

It plugs in under :mod:`stylegrad.kernels.loader`: when emulation is on (``STYLEGRAD_EMULATE=1``
or inside :func:`session`), CPU tensors count as a kernel device, so the unmodified launchers of
``cuda_ops`` compute the grids and arguments they would for a GPU (with an H100 SXM's 132 SMs)
and launch them here. A launch is rejected, as a device would reject it, when the arguments'
sizes do not match the kernel's parameters or the grid/block exceed the limits; a barrier not
reached by every thread of a block is an error (a GPU would hang). Buffers from :func:`empty`
(all kernel outputs and workspaces, through ``loader.empty``) are NaN-poisoned and surrounded
by NaN canaries, checked after every launch that touches them.

Schedules: ``forward`` (threads and blocks in index order), ``reverse``, ``random`` (seeded
permutation at every barrier release and of the block order). A kernel whose output differs
bit for bit between schedules has a race inside a block. ``STYLEGRAD_EMULATE_SCHEDULE=random:7``
picks the schedule for ``STYLEGRAD_EMULATE=1`` runs (default forward). See cuda_emu.h for what
the emulator cannot see (inter-block concurrency, FMA contraction, speed).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from stylegrad.io.fileio import atomic_path, cache_dir
from stylegrad.system import usable_cores

from ..errors import KernelCompileError, KernelUnavailableError
from ..registry import CSRC, SOURCES, read_source

ENV = "STYLEGRAD_EMULATE"
SM_COUNT = 132  # H100 SXM: the grids the launchers compute are those of that GPU
SCHEDULES = ("forward", "reverse", "random")
HERE = Path(__file__).resolve().parent
_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-ffp-contract=off",
          "-fno-math-errno", "-fno-strict-aliasing", "-Wno-unknown-pragmas")


class EmulatorError(RuntimeError):
    """A launch a GPU would reject or that misbehaved: bad arguments or limits, a barrier not
    reached by all threads, a write past a buffer (canary), or a pointer outside any buffer."""


class EmulatorBuildError(KernelCompileError):
    """The host compiler rejected a kernel source; the message carries its log."""


@dataclass(frozen=True)
class Options:
    schedule: str = "forward"
    seed: int = 0
    strict: bool = False  # every pointer argument must lie inside an emulator buffer


_session: Optional[Options] = None
_internal = threading.local()  # depth of emulator bookkeeping on this thread (see in_device_code)
_sources: Dict[str, str] = {}  # source name -> replacement text (mutation tests)
_lock = threading.RLock()


def enabled() -> bool:
    return _session is not None or os.environ.get(ENV, "") == "1"


def options() -> Options:
    if _session is not None:
        return _session
    spec = os.environ.get(ENV + "_SCHEDULE", "forward")  # e.g. "random:7"
    name, _, seed = spec.partition(":")
    return Options(schedule=name, seed=int(seed or 0))


@contextlib.contextmanager
def session(schedule: str = "forward", seed: int = 0, strict: bool = False) -> Iterator[Options]:
    """Emulate (whatever the environment says) with this schedule inside the block."""
    global _session
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    with _lock:
        old, _session = _session, Options(schedule, int(seed), bool(strict))
    try:
        yield _session
    finally:
        with _lock:
            _session = old


@contextlib.contextmanager
def _device_side() -> Iterator[None]:
    _internal.depth = getattr(_internal, "depth", 0) + 1
    try:
        yield
    finally:
        _internal.depth -= 1


def in_device_code() -> bool:
    """True while the emulator does its own bookkeeping (poisoning, canary checks): torch ops
    it runs there stand for device work, not for host operations of the code under test
    (tools that scan the engine for host synchronisation skip them)."""
    return getattr(_internal, "depth", 0) > 0


@contextlib.contextmanager
def source_override(name: str, text: str) -> Iterator[None]:
    """Compile ``text`` instead of ``loader.read_source(name)`` inside the block (mutants)."""
    if name not in SOURCES:
        raise ValueError(f"unknown kernel source {name!r}")
    with _lock:
        old = _sources.get(name)
        _sources[name] = text
    try:
        yield
    finally:
        with _lock:
            if old is None:
                _sources.pop(name, None)
            else:
                _sources[name] = old


# ---------------------------------------------------------------------------------- build
def compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        raise KernelUnavailableError(f"the emulator needs a C++ compiler; {cxx!r} is not on PATH (set CXX)")
    return path


def _cpu_flags() -> Tuple[str, ...]:
    # Hardware FMA makes fmaf() a single instruction (it is correctly rounded either way:
    # glibc's software fmaf gives the same bits, 10-50x slower).
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            if re.search(r"^flags\s*:.*\bfma\b", Path("/proc/cpuinfo").read_text(), re.M):
                return ("-mfma",)
        except OSError:
            pass
    return ()


@functools.lru_cache(maxsize=None)
def _compiler_id(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.splitlines()[0] if out.stdout else cxx


_BOUNDS = re.compile(r"__launch_bounds__\s*\(\s*(\d+)[^)]*\)\s*(\w+)\s*\(")


def _translation_unit(name: str, text: str, entry_points: Sequence[str], bounds: Dict[str, int]) -> str:
    table = "\n".join(f"SG_EMU_ENTRY({e}, {bounds.get(e, 1024)})" for e in entry_points)
    return (f'#include "cuda_emu.h"\n#line 1 "common.cuh"\n{text}\n#include "runtime.inc"\n'
            f"SG_EMU_TABLE_BEGIN\n{table}\nSG_EMU_TABLE_END\n")


def _launch_bounds(cxx: str, name: str, text: str, flags: Sequence[str]) -> Dict[str, int]:
    """entry point -> __launch_bounds__ max threads, read from the preprocessed source (macros
    expand kernels per dtype, so the raw text is not enough)."""
    if "__launch_bounds__" not in text:
        return {}
    src = f'#define SG_EMU_KEEP_LAUNCH_BOUNDS 1\n#include "cuda_emu.h"\n{text}\n'
    out = subprocess.run([cxx, "-E", "-P", "-std=c++17", f"-I{HERE}", "-x", "c++", "-"], input=src,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise EmulatorBuildError(f"g++ -E failed on {name}.cu:\n{out.stderr[-4000:]}")
    return {sym: int(n) for n, sym in _BOUNDS.findall(out.stdout)}


def _build_dir() -> Path:
    return cache_dir("emulator")


def source_text(name: str) -> str:
    return _sources.get(name) or read_source(name)


def build(name: str, entry_points: Optional[Sequence[str]] = None, text: Optional[str] = None,
          extra_flags: Sequence[str] = ()) -> Path:
    """Shared object for kernel source ``name`` (cached by the hash of its inputs)."""
    cxx = compiler()
    text = source_text(name) if text is None else text
    entry_points = tuple(SOURCES[name].entry_points if entry_points is None else entry_points)
    flags = _FLAGS + _cpu_flags() + tuple(extra_flags)
    key = hashlib.sha256()
    for part in (text, "\0".join(entry_points), " ".join(flags), _compiler_id(cxx),
                 (HERE / "cuda_emu.h").read_text(), (HERE / "runtime.inc").read_text()):
        key.update(part.encode())
        key.update(b"\0")
    out_dir = _build_dir()
    so = out_dir / f"{name}-{key.hexdigest()[:20]}.so"
    if so.exists() and so.stat().st_size > 0:
        return so
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = _launch_bounds(cxx, name, text, flags)
    tu = _translation_unit(name, text, entry_points, bounds)
    # atomic: a concurrent builder sees no file or the whole new one
    with atomic_path(so) as tmp:
        cmd = [cxx, *flags, f"-I{HERE}", "-x", "c++", "-", "-o", str(tmp)]
        out = subprocess.run(cmd, input=tu, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise EmulatorBuildError(f"{Path(cxx).name} failed on {name}.cu:\n{out.stderr[-6000:]}")
    return so


def build_all(names: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Build several sources concurrently (one compiler process per source, two at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(SOURCES if names is None else names)
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), usable_cores()))) as pool:
        return dict(zip(names, pool.map(build, names)))


class Module:
    """A loaded emulator shared object."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.lib.sg_emu_launch.restype = ctypes.c_int
        self.lib.sg_emu_launch.argtypes = [
            ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int,
            ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_int]
        self.lib.sg_emu_entry_name.restype = ctypes.c_char_p
        n = self.lib.sg_emu_entry_count()
        self.entry_points = tuple(self.lib.sg_emu_entry_name(i).decode() for i in range(n))


_modules: Dict[Path, Module] = {}


def load(path: Path) -> Module:
    with _lock:
        mod = _modules.get(path)
        if mod is None:
            mod = _modules[path] = Module(path)
        return mod


@dataclass(frozen=True)
class EmulatedKernel:
    module: Module
    symbol: str
    source: str


def with_common(body: str, name: str = "test") -> str:
    """common.cuh + ``body``, as ``loader.read_source`` assembles a registered source."""
    return f'{(CSRC / "common.cuh").read_text()}\n#line 1 "{name}.cu"\n{body}'


def kernel_from_text(name: str, text: str, symbol: str, entry_points: Optional[Sequence[str]] = None,
                     extra_flags: Sequence[str] = ()) -> EmulatedKernel:
    """Build ``text`` (a whole translation unit body, see :func:`with_common`) outside the
    registry, for tests of the emulator itself."""
    mod = load(build(name, tuple(entry_points or (symbol,)), text, extra_flags))
    return EmulatedKernel(mod, symbol, name)


def get_kernel(source: str, symbol: str) -> EmulatedKernel:
    mod = load(build(source))
    if symbol not in mod.entry_points:
        raise ValueError(f"{source}.cu has no entry point {symbol!r}")
    return EmulatedKernel(mod, symbol, source)


# ---------------------------------------------------------------------------------- memory
@dataclass
class _Alloc:
    base: "weakref.ref[torch.Tensor]"
    start: int  # payload address
    nbytes: int
    pad: int  # canary elements on each side
    n: int  # payload elements
    bits: int  # every canary element, viewed as an integer of the element size


_allocs: Dict[int, _Alloc] = {}
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _poison(t: torch.Tensor) -> None:
    if t.is_floating_point():
        t.fill_(float("nan"))
    else:
        t.view(torch.uint8).fill_(0xA5)


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor whose contents are NaN (a kernel that forgets an element leaves NaN) placed
    between two NaN canaries of max(256, min(n, 65536)) elements each."""
    with _device_side():
        return _empty(shape, dtype)


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list, torch.Size)) else (shape,)))
    n = 1
    for s in shape:
        n *= s
    pad = max(256, min(n, 1 << 16))
    base = torch.empty(n + 2 * pad, dtype=dtype)
    _poison(base)
    payload = base[pad:pad + n].view(shape)
    bits = int(base.view(_INT_OF_SIZE[base.element_size()])[0])
    rec = _Alloc(weakref.ref(base), payload.data_ptr(), n * base.element_size(), pad, n, bits)
    with _lock:
        _prune()
        _allocs[rec.start] = rec
    return payload


def _prune() -> None:
    for k in [k for k, a in _allocs.items() if a.base() is None]:
        del _allocs[k]


def _find(ptr: int) -> Optional[_Alloc]:
    for a in _allocs.values():
        if a.start <= ptr < a.start + max(a.nbytes, 1) and a.base() is not None:
            return a
    return None


def _check(a: _Alloc, what: str) -> None:
    base = a.base()
    if base is None:
        return
    ints = base.view(_INT_OF_SIZE[base.element_size()])
    for side, region in (("before", ints[:a.pad]), ("after", ints[a.pad + a.n:])):
        r = region.numpy()  # numpy: ~100x faster than torch.equal on these small regions
        if not (r == a.bits).all():
            bad = np.flatnonzero(r != a.bits)
            off = int(bad[0]) + 1 if side == "after" else a.pad - int(bad[-1])
            raise EmulatorError(f"{what} wrote {side} a buffer of {a.n} elements (canary overwritten "
                                f"{off} elements {'past its end' if side == 'after' else 'before its start'})")


# ---------------------------------------------------------------------------------- launch
def _arg_bytes(i: int, v: Any, symbol: str) -> Tuple[Any, int, bool]:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{symbol}: argument {i} is a bool; pass np.int32 / a pointer int")
    if isinstance(v, int):
        return ctypes.c_uint64(v & (2**64 - 1)), 8, True
    if isinstance(v, np.generic):
        buf = ctypes.create_string_buffer(v.tobytes(), v.itemsize)
        return buf, v.itemsize, False
    raise TypeError(f"{symbol}: argument {i} is a {type(v).__name__}; kernel arguments are pointer ints "
                    "(tensor.data_ptr()) or numpy scalars")


def _dim3(v, what: str) -> Tuple[int, int, int]:
    t = (v,) if isinstance(v, int) else tuple(v)
    if not 1 <= len(t) <= 3 or not all(isinstance(x, (int, np.integer)) for x in t):
        raise EmulatorError(f"{what} must be 1 to 3 integers, got {v!r}")
    t = tuple(int(x) for x in t) + (1,) * (3 - len(t))
    if any(x < 0 or x >= 2**32 for x in t):
        raise EmulatorError(f"{what} {t} is out of range")
    return t


def launch(kernel: EmulatedKernel, grid, block, args: Sequence[Any], opts: Optional[Options] = None) -> None:
    """Run ``kernel`` on the CPU like ``loader.launch`` would on a GPU; raise EmulatorError
    where a device would reject the launch or the kernel misbehaved."""
    with _device_side():
        _launch(kernel, grid, block, args, opts or options())


def _launch(kernel: EmulatedKernel, grid, block, args: Sequence[Any], opts: Options) -> None:
    if opts.schedule not in SCHEDULES:
        raise EmulatorError(f"unknown schedule {opts.schedule!r}; expected one of {', '.join(SCHEDULES)}")
    g, b = _dim3(grid, "grid"), _dim3(block, "block")
    held, sizes, ptrs = [], [], []
    for i, v in enumerate(args):
        buf, size, is_ptr = _arg_bytes(i, v, kernel.symbol)
        held.append(buf)
        sizes.append(size)
        if is_ptr and v:
            ptrs.append((i, v))
    with _lock:
        _prune()
        touched = []
        for i, p in ptrs:
            a = _find(p)
            if a is None and opts.strict:
                raise EmulatorError(f"{kernel.symbol}: argument {i} ({p:#x}) points outside every emulator buffer")
            if a is not None:
                touched.append(a)
        argv = (ctypes.c_void_p * max(1, len(held)))(*[ctypes.addressof(h) for h in held])
        sizev = (ctypes.c_int * max(1, len(sizes)))(*sizes)
        err = ctypes.create_string_buffer(2048)
        rc = kernel.module.lib.sg_emu_launch(
            kernel.symbol.encode(), (ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b), argv, sizev, len(held),
            SCHEDULES.index(opts.schedule), ctypes.c_ulonglong(opts.seed & (2**64 - 1)), err, len(err))
        if rc != 0:
            raise EmulatorError(err.value.decode(errors="replace") or f"{kernel.symbol}: launch failed ({rc})")
        for a in touched:
            _check(a, kernel.symbol)
        if opts.strict:
            for a in list(_allocs.values()):
                _check(a, kernel.symbol)
