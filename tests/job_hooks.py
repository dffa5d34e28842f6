"""Hooks run inside job worker processes by the tests (importable there: spawn copies sys.path)."""
import os
from pathlib import Path


def crash_on(suffix, task):
    """A poison image: the worker process dies every time it is given it."""
    if any(name.endswith(suffix) for name in task.names):
        os._exit(9)


def crash_once_on(suffix, marker_dir, task):
    """The worker dies the first time it is given the image, then works."""
    marker = Path(marker_dir) / ("crashed-" + suffix)
    if any(name.endswith(suffix) for name in task.names) and not marker.exists():
        marker.write_text("1")
        os._exit(7)
