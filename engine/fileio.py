"""File helpers. Atomic writes: a temporary file in the target's folder, fsync, then
``os.replace``; a reader sees the old file or the new one, never a partial one, and a failure
leaves no temporary. And the SHA-256 of a file."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union


def atomic_write(path: Union[str, os.PathLike], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file and move it to ``path``."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + p.name + ".", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        os.chmod(tmp, 0o644)   # mkstemp makes 0600; our outputs are ordinary readable files
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def write_json_atomic(path: Union[str, os.PathLike], data) -> Path:
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def file_sha256(path: Union[str, os.PathLike]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
