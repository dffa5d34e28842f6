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

Each line is written with one ``write`` on a file opened for appending, then flushed and
fsync'd, so a crash loses at most the images in flight. A torn last line (a crash inside the
write) is skipped when reading, and the next run starts on a fresh line. One process writes a
job folder at a time: the manifest is locked (``flock``) for the duration of a run; a second
run on the same folder is refused. (On network filesystems without working ``flock`` the lock
is not taken: do not run two drivers on one folder there.)
"""
from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import StyleGradError

MANIFEST_NAME = "stylegrad-job.jsonl"


class JobFolderBusy(StyleGradError):
    """Another process is running a job in this folder."""


def manifest_path(job_dir) -> Path:
    return Path(job_dir) / MANIFEST_NAME


def read_records(path, unreadable: Optional[List[int]] = None) -> List[dict]:
    """Every well-formed record of a manifest. A torn or foreign line is skipped; its line
    number (1-based) goes to ``unreadable`` when given (blank lines are not counted)."""
    out = []
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if isinstance(rec, dict) and "kind" in rec:
                    out.append(rec)
                elif unreadable is not None and line.strip():
                    unreadable.append(n)
    except FileNotFoundError:
        pass
    return out


class ManifestWriter:
    """The manifest of one job folder, locked and open for appending."""

    def __init__(self, job_dir):
        self.path = manifest_path(job_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # A crash inside a write can leave a torn last line: start the next record on a new line.
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            self._needs_newline = os.read(fd, 1) != b"\n"
        else:
            self._needs_newline = False

    def append(self, record: dict) -> None:
        data = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        if self._needs_newline:
            data = "\n" + data
            self._needs_newline = False
        view = memoryview(data.encode())
        while view:                      # O_APPEND: each write lands at the end
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)       # closing releases the lock
            self._fd = None

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:              # not POSIX: no lock (documented)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise JobFolderBusy(f"another stylegrad process is running a job in {path.parent} "
                                f"(its manifest {path.name} is locked); wait for it or use another --out-dir") from None
        # ENOLCK/EOPNOTSUPP etc.: a filesystem without flock; run unlocked (documented)


def is_locked(job_dir) -> bool:
    """Whether a process holds the folder's job lock now (False where flock is unavailable)."""
    try:
        import fcntl
        fd = os.open(manifest_path(job_dir), os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
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

    @property
    def last_run(self) -> Optional[dict]:
        return self.runs[-1] if self.runs else None


def load_state(job_dir) -> JobState:
    st = JobState()
    for rec in read_records(manifest_path(job_dir), st.unreadable):
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
