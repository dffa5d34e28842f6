"""File helpers: atomic writes, stale temporaries, output locks, the cache folder, SHA-256.

Atomic writes: the content goes to a temporary file (or folder) in the target's folder, is
flushed to disk, then ``os.replace`` puts it in place; a reader sees the old file or the new
one, never a partial one, and a failure (or SIGINT / SIGTERM, which the CLI turns into
exceptions) leaves no temporary behind. Every file stylegrad writes (images, weights
downloads, JSON, ONNX graphs, compiled kernels, cached exports) goes through
:func:`atomic_path`, :func:`atomic_write` or :func:`atomic_directory`. A file that replaces an
existing one keeps that file's permission bits; a new one gets 0666 less the umask.

Temporaries are named ``.NAME.stylegrad-XXXXXXXX.tmp`` next to ``NAME``. Only a process killed
outright (SIGKILL, power loss) leaves one behind; the next atomic write into that folder (once
per process and folder) removes those of ours older than ``STALE_SECONDS`` (:func:`sweep_stale`).

Output locks (:func:`output_lock`): an advisory ``flock`` on ``.NAME.stylegrad-lock`` next to
``NAME`` while a process works on that output; a second process asking for it gets
:class:`~stylegrad.errors.OutputLockedError` naming the holder's pid. The lock file is removed
when the lock is released; one left by a killed process holds no lock and is reused or swept.

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
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Set, Union

from .errors import OutputLockedError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks
    fcntl = None

CACHE_ENV = "STYLEGRAD_CACHE"
TMP_TAG = ".stylegrad-"        # temporaries: "." + NAME + TMP_TAG + random + TMP_SUFFIX
TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".stylegrad-lock"
STALE_SECONDS = 3600.0          # a temporary untouched this long belongs to a dead process

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


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def file_mode(path: PathLike) -> int:
    """Permission bits a file written at ``path`` gets: the existing file's, else 0666 less
    the umask (what ``open`` would give a new file)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def is_stylegrad_temporary(name: str) -> bool:
    return name.startswith(".") and ((TMP_TAG in name and name.endswith(TMP_SUFFIX)) or name.endswith(LOCK_SUFFIX))


def sweep_stale(folder: PathLike, max_age: float = STALE_SECONDS) -> list:
    """Remove our temporaries (and unheld lock files) in ``folder`` whose mtime is more than
    ``max_age`` seconds old; returns what was removed. Other files are never touched."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not is_stylegrad_temporary(e.name):
            continue
        try:
            if now - e.stat(follow_symlinks=False).st_mtime < max_age:
                continue
            if e.name.endswith(LOCK_SUFFIX):
                if _remove_unheld_lock(Path(e.path)):
                    removed.append(e.path)
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
            removed.append(e.path)
        except OSError:
            continue
    return removed


_SWEPT: Set[str] = set()


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _SWEPT:
        _SWEPT.add(key)
        sweep_stale(folder)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary file next to ``path`` for code that writes by file name (exporters);
    moved to ``path`` when the block ends without an exception, removed otherwise."""
    p = Path(path)
    _sweep_once(_folder(p))
    mode = file_mode(p)
    fd, tmp = tempfile.mkstemp(prefix="." + p.name + TMP_TAG, suffix=TMP_SUFFIX, dir=_folder(p))
    os.close(fd)
    try:
        os.chmod(tmp, mode)   # mkstemp makes 0600; keep an existing output's mode
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
    _sweep_once(_folder(p))
    tmp = Path(tempfile.mkdtemp(prefix="." + p.name + TMP_TAG, suffix=TMP_SUFFIX, dir=_folder(p)))
    try:
        yield tmp
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_writable_folder(folder: PathLike) -> Optional[str]:
    """Why files cannot be written into ``folder`` (None when they can): it must exist, be a
    folder, and take a temporary file (created and removed here, so read-only filesystems,
    permissions and quotas all show)."""
    d = Path(folder) if str(folder) else Path(".")
    if not d.exists():
        return f"folder {d} does not exist"
    if not d.is_dir():
        return f"{d} is not a folder"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-check" + TMP_TAG, suffix=TMP_SUFFIX, dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"cannot write in {d}: {e.strerror or e}"
    return None


def lock_path(path: PathLike) -> Path:
    p = Path(path)
    return p.with_name("." + p.name + LOCK_SUFFIX)


def _remove_unheld_lock(lock: Path) -> bool:
    """Remove a lock file nobody holds (True), leave a held one (False)."""
    if fcntl is None:
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    try:
        if os.path.samestat(os.fstat(fd), os.stat(lock)):
            os.unlink(lock)
            return True
        return False
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


@contextmanager
def output_lock(path: PathLike) -> Iterator[None]:
    """Hold an advisory lock on output ``path`` for the block (see the module docstring);
    :class:`OutputLockedError` when another process holds it. Not reentrant: take it once
    per output and process. Without ``fcntl`` (not POSIX) it does nothing."""
    if fcntl is None:
        yield
        return
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise OutputLockedError(f"{path} is being written by another process (pid {holder}); "
                                    f"not written here") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)       # its holder removed the file as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            os.unlink(lock)   # while still held: a waiter that opened the old file retries
        except FileNotFoundError:
            pass
        os.close(fd)


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
