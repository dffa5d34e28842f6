"""File helpers: atomic writes, the cache folder, and the SHA-256 of a file.

Atomic writes: the content goes to a temporary file (or folder) in the target's folder, is
flushed to disk, then ``os.replace`` puts it in place; a reader sees the old file or the new
one, never a partial one, and a failure leaves no temporary behind. Every file stylegrad
writes (images, weights downloads, JSON, ONNX graphs, compiled kernels, cached exports) goes
through :func:`atomic_path`, :func:`atomic_write` or :func:`atomic_directory`.

Cache: :func:`cache_dir` is the one cache location, ``$STYLEGRAD_CACHE`` when set, else
``$XDG_CACHE_HOME/stylegrad``, else ``~/.cache/stylegrad``; each cache is a subfolder of it
(``kernels/`` compiled CUDA kernels, ``onnx/`` exported graphs). ImageNet weights are not
in it: they live in torch's hub cache (``stylegrad.weights``), shared with torchvision.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

CACHE_ENV = "STYLEGRAD_CACHE"

PathLike = Union[str, os.PathLike]


def cache_dir(*parts: str) -> Path:
    """The stylegrad cache folder, or a subfolder of it (not created here)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "stylegrad")
    return Path(root).joinpath(*parts)


def _folder(p: Path) -> Path:
    return p.parent if str(p.parent) else Path(".")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary file next to ``path`` for code that writes by file name (exporters);
    moved to ``path`` when the block ends without an exception, removed otherwise."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + p.name + ".", suffix=".tmp", dir=_folder(p))
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)   # mkstemp makes 0600; our outputs are ordinary readable files
        yield Path(tmp)
        _fsync(Path(tmp))
        os.replace(tmp, p)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file and move it to ``path``."""
    p = Path(path)
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return p


def write_json_atomic(path: PathLike, data) -> Path:
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """A temporary folder next to ``path``, filled by the block, then put in place of ``path``
    (an existing ``path`` is replaced); removed when the block raises. When another process
    puts its own folder at ``path`` first, ``os.replace`` fails and the ``OSError`` reaches the
    caller, which may then use that folder."""
    p = Path(path)
    _folder(p).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="." + p.name + ".", suffix=".tmp", dir=_folder(p)))
    try:
        yield tmp
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
