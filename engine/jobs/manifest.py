"""The job manifest: ``DIR/stylegrad-job.jsonl``, one JSON object per line, append-only.

Three kinds of lines (``"kind"``):

- ``run``: written when a run starts: its id, start time, the pixel settings and their hash,
  the planned inputs (absolute paths, in order) and outputs (names inside DIR), the workers.
- ``image``: one per finished image: ``input`` (absolute path), ``input_sha256``,
  ``styles_sha256``, ``config_hash``, ``output`` (name inside DIR), ``output_sha256``,
  ``status`` (``ok`` / ``error`` with ``error`` / ``cancelled``: a progress callback stopped
  it, nothing written), ``seconds`` (its batch's optimisation time),
  ``batch`` (images optimised together), ``backend``, ``device``, ``host``, ``finished``, ``run``.
- ``end``: written when a run ends, with its counts (absent after a crash).

Each record is one line written with a single ``write`` on a file opened for appending, then
fsync'd: whole or not at all. A write that fails (a full disk, a quota, a read-only
filesystem: :class:`~stylegrad.errors.NoSpaceError`) is cut back off the file, so the manifest
stays valid JSON lines and a crash loses at most the images in flight. A torn last line left by
a crash inside a write is cut off when the folder is next opened for a run (it is skipped when
reading). One process writes a job folder at a time: the manifest is locked (``flock``) for
the duration of a run; a second run on the same folder is refused. (On network filesystems
without working ``flock`` the lock is not taken: do not run two drivers on one folder there.)
The manifest is never opened through a symbolic link, nor when it is a folder or has other
hard links (:func:`stylegrad.io.fileio.open_own_file`).

A line that is not a record of this job (not JSON, an unknown kind, an ``image`` or ``end``
record of a run the file does not start, a ``run`` record without its fields) is listed with
its line number and reason (:attr:`JobState.unreadable`); a run refuses such a folder
(:class:`JobManifestError`), ``stylegrad job status`` warns.
"""
from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from stylegrad.errors import StyleGradError
from stylegrad.io.fileio import LOCK_BUSY, flock_nowait, is_no_space, no_space_error, open_own_file
from stylegrad.run.progress import finite_or_null

MANIFEST_NAME = "stylegrad-job.jsonl"


class JobFolderBusy(StyleGradError):
    """Another process is running a job in this folder."""


class JobManifestError(StyleGradError):
    """The folder's manifest holds lines that are not records of its job."""


def manifest_path(job_dir) -> Path:
    return Path(job_dir) / MANIFEST_NAME


_REMEDY = "move it away or use another --out-dir"


def _check_run(rec: dict) -> Optional[str]:
    if not isinstance(rec.get("run"), str):
        return "a run record without a run id"
    for key, typ in (("settings", dict), ("inputs", list), ("outputs", list)):
        if not isinstance(rec.get(key), typ):
            return f"a run record whose {key!r} is not a {typ.__name__}"
    if len(rec["inputs"]) != len(rec["outputs"]):
        return "a run record with more inputs than outputs or fewer"
    return None


def classify_line(line: bytes, runs: set) -> Tuple[Optional[dict], Optional[str]]:
    """(record, None) for a line of this manifest's job, else (None, why). ``runs``: the run
    ids of the run records above it."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None, "not JSON (a torn or foreign line)"
    if not isinstance(rec, dict) or rec.get("kind") not in ("run", "image", "end"):
        return None, "not a stylegrad job record"
    kind = rec["kind"]
    if kind == "run":
        why = _check_run(rec)
        return (None, why) if why else (rec, None)
    if rec.get("run") not in runs:
        return None, f"an {kind} record of run {rec.get('run')!r}, which this manifest does not start (another job's line?)"
    if kind == "image" and not (isinstance(rec.get("input"), str) and isinstance(rec.get("status"), str)):
        return None, "an image record without its input or status"
    return rec, None


def _open_for_reading(path: Path) -> Optional[int]:
    try:
        fd, _ = open_own_file(path, os.O_RDONLY, "job manifest", _REMEDY)
    except FileNotFoundError:
        return None
    return fd


def read_records(path, unreadable: Optional[List[int]] = None, reasons: Optional[Dict[int, str]] = None) -> List[dict]:
    """Every record of this job in a manifest. A line that is not (see the module doc) is
    skipped; its line number (1-based) goes to ``unreadable`` and its reason to ``reasons``
    when given (blank lines are not counted). A torn last line (no newline at its end) is
    skipped without being counted."""
    out = []
    fd = _open_for_reading(Path(path))
    if fd is None:
        return out
    runs: set = set()
    with os.fdopen(fd, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec, why = classify_line(line, runs)
            if rec is not None:
                if rec["kind"] == "run":
                    runs.add(rec["run"])
                out.append(rec)
            elif not line.endswith(b"\n"):
                continue                      # a torn last line: cut off by the next run
            else:
                if unreadable is not None:
                    unreadable.append(n)
                if reasons is not None:
                    reasons[n] = why
    return out


class ManifestWriter:
    """The manifest of one job folder, locked and open for appending. ``fresh``: start it
    over (everything it held is dropped, under the lock)."""

    def __init__(self, job_dir, fresh: bool = False):
        self.path = manifest_path(job_dir)
        fd, self.created = open_own_file(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, "job manifest", _REMEDY)
        try:
            _lock(fd, self.path)
            if fresh:
                os.ftruncate(fd, 0)
            else:
                _cut_torn_tail(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def append(self, record: dict) -> None:
        """One record, whole or not at all: a failed write is cut back off the file. Strict
        JSON: a non-finite number (a diverged run's loss) is written as null."""
        data = (json.dumps(finite_or_null(record), allow_nan=False, separators=(",", ":")) + "\n").encode()
        size = os.fstat(self._fd).st_size
        try:
            n = os.write(self._fd, data)     # O_APPEND: lands at the end, in one piece
            if n != len(data):               # a short write: the filesystem is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            if is_no_space(e):
                raise no_space_error(e, self.path, len(data)) from None
            raise

    def close(self) -> None:
        if self._fd is not None:
            try:
                if self.created and os.fstat(self._fd).st_size == 0:
                    os.unlink(self.path)     # nothing recorded: leave nothing behind (still locked)
            except OSError:
                pass
            os.close(self._fd)       # closing releases the lock
            self._fd = None

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut_torn_tail(fd: int) -> None:
    """A crash inside a write can leave a torn last line (no newline at its end): cut it off;
    a whole record that only lacks its newline gets one."""
    size = os.fstat(fd).st_size
    if not size:
        return
    keep = size
    chunk = 4096
    tail = b""
    while keep > 0:
        start = max(0, keep - chunk)
        tail = os.pread(fd, keep - start, start) + tail
        keep = start
        if b"\n" in tail:
            break
    cut = tail.rfind(b"\n")
    last = tail[cut + 1:]
    if not last:
        return
    try:
        whole = isinstance(json.loads(last), dict)
    except ValueError:
        whole = False
    if whole:
        os.write(fd, b"\n")
        os.fsync(fd)
    else:
        os.ftruncate(fd, size - len(last))
        os.fsync(fd)


def _lock(fd: int, path: Path) -> None:
    # without flock (not POSIX, or a filesystem that refuses it) the job runs unlocked (documented)
    if flock_nowait(fd) == LOCK_BUSY:
        raise JobFolderBusy(f"another stylegrad process is running a job in {path.parent} "
                            f"(its manifest {path.name} is locked); wait for it or use another --out-dir")


def is_locked(job_dir) -> bool:
    """Whether a process holds the folder's job lock now (False where flock is unavailable)."""
    try:
        fd = _open_for_reading(manifest_path(job_dir))
    except (OSError, StyleGradError):
        return False
    if fd is None:
        return False
    try:
        return flock_nowait(fd, shared=True) == LOCK_BUSY
    finally:
        os.close(fd)


# -- reading a job back ------------------------------------------------------------------------

@dataclass
class JobState:
    """A manifest read back: the runs, and the latest record per input."""

    runs: List[dict] = field(default_factory=list)
    latest: Dict[str, dict] = field(default_factory=dict)          # input -> latest image record
    latest_ok: Dict[str, dict] = field(default_factory=dict)       # input -> latest ok record
    images: List[dict] = field(default_factory=list)               # every image record, in order
    ends: Dict[str, dict] = field(default_factory=dict)            # run id -> end record
    unreadable: List[int] = field(default_factory=list)            # line numbers skipped as unreadable
    reasons: Dict[int, str] = field(default_factory=dict)          # line number -> why it was skipped

    @property
    def last_run(self) -> Optional[dict]:
        return self.runs[-1] if self.runs else None


def load_state(job_dir) -> JobState:
    st = JobState()
    for rec in read_records(manifest_path(job_dir), st.unreadable, st.reasons):
        kind = rec.get("kind")
        if kind == "run":
            st.runs.append(rec)
        elif kind == "image" and isinstance(rec.get("input"), str):
            st.images.append(rec)
            st.latest[rec["input"]] = rec
            if rec.get("status") == "ok":
                st.latest_ok[rec["input"]] = rec
        elif kind == "end":
            st.ends[str(rec.get("run"))] = rec
    return st


def now() -> float:
    return round(time.time(), 3)
