"""File helpers: atomic writes, stale temporaries, output locks, the cache folder, SHA-256.

Atomic writes: the content goes to a temporary file (or folder) in the target's folder, is
flushed to disk, then ``os.replace`` puts it in place; a reader sees the old file or the new
one, never a partial one, and a failure (or SIGINT / SIGTERM, which the CLI turns into
exceptions) leaves no temporary behind. Every file stylegrad writes (images, weights
downloads, JSON, ONNX graphs, compiled kernels, cached exports) goes through
:func:`atomic_path`, :func:`atomic_write` or :func:`atomic_directory`. A written file gets
ordinary permissions, 0666 less the umask, whether it is new or replaces one (special bits
such as setuid are never carried over). A full disk, a quota or a read-only filesystem is
:class:`~stylegrad.errors.NoSpaceError` naming the file and the space needed
(:func:`no_space_error`).

Which paths may be written: :func:`check_write_target` is the one rule, for outputs and
``--save-every`` snapshots alike: never an input, never a folder, never an existing file
unless replacing it is allowed (the user named it, or ``--overwrite``).

Temporaries are named ``.NAME.stylegrad-PID-XXXXXXXX.tmp`` next to ``NAME`` (PID: the process
writing it). Only a process killed outright (SIGKILL, power loss) leaves one behind; the next
atomic write into that folder (once per process and folder) removes those of ours whose process
is gone and that are older than ``STALE_SECONDS`` (:func:`sweep_stale`): regular files only,
never a folder or a link.

Output locks (:func:`output_lock`): an advisory ``flock`` on ``.NAME.stylegrad-lock`` next to
``NAME`` while a process works on that output, ``-o`` runs and job workers alike; a second
process asking for it gets :class:`~stylegrad.errors.OutputLockedError` naming the holder's pid.
The lock file is removed when the lock is released; one left by a killed process holds no lock
and is reused or swept. Lock files and job manifests are opened with :func:`open_own_file`:
never through a symbolic link, never a folder or a file with other hard links.

Cache: :func:`cache_dir` is the one cache location, ``$STYLEGRAD_CACHE`` when set, else
``$XDG_CACHE_HOME/stylegrad``, else ``~/.cache/stylegrad``; each cache is a subfolder of it
(``kernels/`` compiled CUDA kernels, ``onnx/`` exported graphs). ImageNet weights are not
in it: they live in torch's hub cache (``stylegrad.model.weights``), shared with torchvision.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from stylegrad.errors import ConfigError, NoSpaceError, OutputLockedError, UnsafeFileError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks
    fcntl = None

CACHE_ENV = "STYLEGRAD_CACHE"
TMP_TAG = ".stylegrad-"        # temporaries: "." + NAME + TMP_TAG + PID + "-" + random + TMP_SUFFIX
TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".stylegrad-lock"
STALE_SECONDS = 3600.0          # a temporary of a dead process is swept once this old
LOCK_MAX_BYTES = 64             # a lock file holds a pid and a newline, nothing more
NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EROFS} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
_TEMPORARY = re.compile(r"^\..+" + re.escape(TMP_TAG) + r"(\d+)-[^.]+" + re.escape(TMP_SUFFIX) + "$")

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


def file_mode() -> int:
    """Permission bits of every file stylegrad writes, new or replacing one: 0666 less the
    umask (what ``open`` gives a new file); an old file's special bits are never kept."""
    return 0o666 & ~_umask()


def is_stylegrad_temporary(name: str) -> bool:
    return name.startswith(".") and ((TMP_TAG in name and name.endswith(TMP_SUFFIX)) or name.endswith(LOCK_SUFFIX))


def temporary_owner(name: str) -> Optional[int]:
    """The pid in one of our temporaries' names (``.NAME.stylegrad-PID-XXXX.tmp``), else None."""
    m = _TEMPORARY.match(name)
    return int(m.group(1)) if m else None


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (another user's counts as alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def sweep_stale(folder: PathLike, max_age: float = STALE_SECONDS) -> list:
    """Remove our temporaries in ``folder`` whose process is gone and whose mtime is more than
    ``max_age`` seconds old, and lock files nobody holds that old; returns what was removed.
    Only regular files are removed: never a folder, a link (or what it points at), or a file
    whose name is not one of ours."""
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
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < max_age:
                continue
            if e.name.endswith(LOCK_SUFFIX):
                if remove_unheld_lock(Path(e.path)):
                    removed.append(e.path)
                continue
            pid = temporary_owner(e.name)
            if pid is None or process_alive(pid):
                continue
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


def _temporary_prefix(p: Path) -> str:
    return "." + p.name + TMP_TAG + f"{os.getpid()}-"


def free_bytes(folder: PathLike) -> Optional[int]:
    """Bytes available to this user on the filesystem of ``folder`` (None if unknown)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def is_no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS


def no_space_error(e: OSError, path: PathLike, needed: Optional[int] = None) -> NoSpaceError:
    """The one-line error of a write that failed for lack of space (ENOSPC, EDQUOT) or on a
    read-only filesystem (EROFS): the file, and the space needed and free."""
    why = os.strerror(e.errno)         # "No space left on device", "Disk quota exceeded", ...
    if e.errno == errno.EROFS:
        return NoSpaceError(f"cannot write {path}: {why}")
    free = free_bytes(_folder(Path(path)))
    parts = []
    if needed:
        parts.append(f"about {format_bytes(needed)} needed")
    if free is not None:
        parts.append(f"{format_bytes(free)} free")
    return NoSpaceError(f"cannot write {path}: {why}" + (f" ({', '.join(parts)})" if parts else ""))


@contextmanager
def atomic_path(path: PathLike, size_hint: Optional[int] = None) -> Iterator[Path]:
    """A temporary file next to ``path`` for code that writes by file name (exporters);
    moved to ``path`` when the block ends without an exception, removed otherwise. A full
    disk or read-only filesystem becomes :class:`NoSpaceError` (``size_hint``: the bytes the
    file is expected to take, for its message)."""
    p = Path(path)
    _sweep_once(_folder(p))
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(p), suffix=TMP_SUFFIX, dir=_folder(p))
    except OSError as e:
        if is_no_space(e):
            raise no_space_error(e, p, size_hint) from None
        raise
    os.close(fd)
    try:
        try:
            os.chmod(tmp, file_mode())   # mkstemp makes 0600
            yield Path(tmp)
            _fsync(Path(tmp))
            os.replace(tmp, p)
        except OSError as e:
            if not is_no_space(e):
                raise
            try:
                written = os.path.getsize(tmp)
            except OSError:
                written = 0
            raise no_space_error(e, p, max(size_hint or 0, written) or None) from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None], size_hint: Optional[int] = None) -> Path:
    """Call ``write(f)`` on a temporary binary file and move it to ``path``."""
    p = Path(path)
    with atomic_path(p, size_hint) as tmp:
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
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(p), suffix=TMP_SUFFIX, dir=_folder(p)))
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
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(d / "write-check"), suffix=TMP_SUFFIX, dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"cannot write in {d}: {e.strerror or e}"
    return None


def check_creatable_folder(folder: PathLike) -> Optional[str]:
    """Like :func:`check_writable_folder` for a folder that may not exist yet (it is not
    created here): its nearest existing ancestor must be a folder that takes a file."""
    d = Path(folder) if str(folder) else Path(".")
    if d.exists() or d.is_symlink():
        return check_writable_folder(d)
    anc = d.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return f"cannot create {d}: {anc} is not a folder"
    why = check_writable_folder(anc)
    return f"cannot create {d}: {why}" if why else None


def make_folders(folder: PathLike) -> List[Path]:
    """Create ``folder`` and its missing parents; the folders created, outermost first (for
    :func:`remove_created_folders`)."""
    d = Path(folder).absolute()
    missing = []
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    missing.reverse()
    Path(folder).mkdir(parents=True, exist_ok=True)
    return missing


def remove_created_folders(created: List[Path]) -> None:
    """Remove folders :func:`make_folders` created, innermost first, where they are empty
    (a folder something was written into stays)."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file (links followed)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return os.path.realpath(pa) == os.path.realpath(pb)


def check_write_target(path: PathLike, inputs: Sequence[PathLike] = (), replace_existing: bool = True,
                       what: str = "output", remedy: str = "pass --overwrite to replace it") -> Path:
    """The one rule for whether stylegrad may write ``path`` (outputs and ``--save-every``
    snapshots alike); :class:`ConfigError` when it may not: it is one of ``inputs``, or a
    folder, or an existing file when ``replace_existing`` is False (a file the user did not
    name, such as a snapshot, is replaced only with ``--overwrite``; ``remedy`` says how)."""
    p = Path(path)
    for i in inputs:
        if same_file(p, i):
            raise ConfigError(f"{what} {p} is an input image; refusing to overwrite it")
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a folder")
    if not replace_existing and (p.exists() or p.is_symlink()):
        raise ConfigError(f"{what} {p} exists; refusing to replace a file not named on the command line "
                          f"({remedy})")
    return p


def open_own_file(path: PathLike, flags: int, what: str, remedy: str = "remove it or move it away") -> Tuple[int, bool]:
    """Open a file stylegrad keeps for itself (a lock file, a job manifest): ``(fd, created)``.
    Never through a symbolic link (``O_NOFOLLOW``; a new file is created with ``O_EXCL``);
    :class:`UnsafeFileError` for a link, a folder, something not a regular file, or a file
    with other hard links (writing it would change another file)."""
    p = Path(path)
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    base = flags & ~(os.O_CREAT | os.O_EXCL)
    try:
        fd, created = None, False
        if flags & os.O_CREAT:
            try:
                fd, created = os.open(p, base | os.O_CREAT | os.O_EXCL | nofollow, file_mode()), True
            except FileExistsError:
                pass
        if fd is None:
            fd = os.open(p, base | nofollow)
    except OSError as e:
        if p.is_symlink() or e.errno == errno.ELOOP:
            raise UnsafeFileError(f"{what} {p} is a symbolic link; stylegrad does not follow links for it: "
                                  f"{remedy}") from None
        if e.errno == errno.EISDIR or p.is_dir():
            raise UnsafeFileError(f"{what} {p} is a folder, not a file: {remedy}") from None
        if is_no_space(e):
            raise no_space_error(e, p) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{what} {p} is not a regular file: {remedy}")
        if st.st_nlink > 1:
            raise UnsafeFileError(f"{what} {p} has other hard links (writing it would change another file): "
                                  f"{remedy}")
    except BaseException:
        os.close(fd)
        raise
    if not flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd, created


LOCK_HELD, LOCK_BUSY, LOCK_UNSUPPORTED = "held", "busy", "unsupported"


def flock_nowait(fd: int, shared: bool = False) -> str:
    """The one advisory-lock rule (output locks and job manifests): take ``flock`` on ``fd``
    without waiting. :data:`LOCK_HELD` when taken; :data:`LOCK_BUSY` when another process
    holds it; :data:`LOCK_UNSUPPORTED` where there is no flock (not POSIX, or a filesystem
    that refuses it: the caller goes on unlocked, as documented)."""
    if fcntl is None:
        return LOCK_UNSUPPORTED
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return LOCK_BUSY
        return LOCK_UNSUPPORTED
    return LOCK_HELD


def lock_path(path: PathLike) -> Path:
    p = Path(path)
    return p.with_name("." + p.name + LOCK_SUFFIX)


def remove_unheld_lock(lock: Path) -> bool:
    """Remove a lock file nobody holds (True), leave a held one (False). Links and files that
    are not lock files are left alone."""
    if fcntl is None:
        return False
    try:
        fd, _ = open_own_file(lock, os.O_RDWR, "lock file")
    except (UnsafeFileError, OSError):
        return False
    try:
        if os.fstat(fd).st_size > LOCK_MAX_BYTES or flock_nowait(fd) != LOCK_HELD:
            os.close(fd)
            return False
    except OSError:
        os.close(fd)
        return False
    try:
        if os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False)):
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
    :class:`OutputLockedError` when another process holds it, :class:`UnsafeFileError` when
    the lock file's name is taken by a link or a file that is not a lock file. Not reentrant:
    take it once per output and process. Without flock (not POSIX, or a filesystem that refuses
    it; :func:`flock_nowait`) the output is written unlocked."""
    if fcntl is None:
        yield
        return
    lock = lock_path(path)
    remedy = f"remove it (no stylegrad process writes {Path(path).name} now) or choose another output"
    while True:
        fd, _ = open_own_file(lock, os.O_RDWR | os.O_CREAT, "lock file", remedy)
        try:
            if os.fstat(fd).st_size > LOCK_MAX_BYTES:
                raise UnsafeFileError(f"lock file {lock} holds data stylegrad did not write: {remedy}")
            state = flock_nowait(fd)
        except BaseException:
            os.close(fd)
            raise
        if state == LOCK_BUSY:
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise OutputLockedError(f"{path} is being written by another process (pid {holder}); "
                                    f"not written here")
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False)):
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


def _debris_owner(name: str, outputs: dict) -> Optional[Path]:
    """The output (of ``outputs``: file name -> path) whose lock file or temporary ``name`` is,
    counting its ``--save-every`` snapshots (``STEM[.scaleK].iterNNNN.EXT``) as its own."""
    if name.endswith(LOCK_SUFFIX):
        return outputs.get(name[1:-len(LOCK_SUFFIX)])
    if temporary_owner(name) is None:
        return None
    target = name[1:name.rindex(TMP_TAG, 0, len(name) - len(TMP_SUFFIX))]
    if target in outputs:
        return outputs[target]
    m = re.match(r"^(.*?)(?:\.scale\d+)?\.iter\d+(\.[^.]*)$", target)
    return outputs.get(m.group(1) + m.group(2)) if m else None


def remove_debris(outputs: Sequence[PathLike]) -> List[str]:
    """Once the processes that wrote ``outputs`` are stopped (a job's end): remove their lock
    files nobody holds, and under each output's lock the temporaries of it and its snapshots
    whose process is gone from this host (a process killed outright, such as a Ray actor,
    runs no cleanup of its own). Regular files only; returns what was removed."""
    removed: List[str] = []
    by_folder: dict = {}
    for o in outputs:
        p = Path(o)
        by_folder.setdefault(_folder(p), {})[p.name] = p
    for folder, named in by_folder.items():
        try:
            entries = [e for e in os.scandir(folder) if is_stylegrad_temporary(e.name)]
        except OSError:
            continue
        temps: dict = {}
        for e in entries:
            out = _debris_owner(e.name, named)
            if out is None:
                continue
            try:
                if not stat.S_ISREG(e.stat(follow_symlinks=False).st_mode):
                    continue
            except OSError:
                continue
            if e.name.endswith(LOCK_SUFFIX):
                continue            # released below, after the temporaries
            pid = temporary_owner(e.name)
            if pid is not None and not process_alive(pid):
                temps.setdefault(out, []).append(e.path)
        for out, paths in temps.items():
            try:
                with output_lock(out):      # nobody writes this output now
                    for t in paths:
                        try:
                            os.unlink(t)
                            removed.append(t)
                        except OSError:
                            pass
            except (OutputLockedError, UnsafeFileError, OSError):
                continue
        for e in entries:
            if e.name.endswith(LOCK_SUFFIX) and _debris_owner(e.name, named) is not None:
                try:
                    if stat.S_ISREG(e.stat(follow_symlinks=False).st_mode) and remove_unheld_lock(Path(e.path)):
                        removed.append(e.path)
                except OSError:
                    pass
    return removed


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
