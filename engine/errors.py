"""Errors that reach users as one plain line (the CLI prints ``str(err)`` and exits), and the
one rule that turns any exception into such a line (:func:`error_text`)."""


class StyleGradError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(StyleGradError, ValueError):
    """An invalid option or combination of options."""


class ImageError(StyleGradError):
    """An image that cannot be read or written."""


class WeightsError(StyleGradError):
    """VGG weights that cannot be found, downloaded or loaded."""


class WeightsUnavailableError(WeightsError):
    """ImageNet weights that are not cached and cannot be downloaded now (offline, or
    ``STYLEGRAD_OFFLINE=1``). The CLI adds the command line that runs offline instead."""


class BackendUnavailableError(StyleGradError):
    """A backend that is not installed or does not support the device."""


class RunFailedError(StyleGradError):
    """An optimisation that ran but did not produce a usable image; ``result`` holds what it
    reported (history, status, message) and never an image."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class DivergedError(RunFailedError):
    """The loss became non-finite. ``iteration``: the first iteration with a non-finite loss;
    ``last_finite_iteration`` / ``last_finite_loss``: the last one before it (None if none)."""

    def __init__(self, message: str, result=None, iteration: int = 0,
                 last_finite_iteration=None, last_finite_loss=None):
        super().__init__(message, result)
        self.iteration = iteration
        self.last_finite_iteration = last_finite_iteration
        self.last_finite_loss = last_finite_loss


class StalledError(RunFailedError):
    """The optimiser made no progress (the image did not change, or the loss stayed above half
    its initial value for 20 or more iterations from a content or noise start)."""


class MemoryLimitError(StyleGradError):
    """A run whose estimated peak memory is over the available memory or ``--max-memory``."""


class OutputLockedError(StyleGradError):
    """An output that another process is writing (it holds the output's advisory lock)."""


class UnsafeFileError(StyleGradError):
    """A lock file or job manifest that stylegrad refuses to open: a symbolic link, a folder,
    a file with other hard links, or (a lock file) one holding data stylegrad did not write."""


class NoSpaceError(ImageError):
    """A write that failed because the filesystem is full (ENOSPC), over a quota (EDQUOT) or
    read-only (EROFS); the message names the file and the space needed. An :class:`ImageError`
    (a failed image write has always been one), also raised for a job manifest."""


class Terminated(BaseException):
    """SIGTERM, raised by the CLI's handler like KeyboardInterrupt for SIGINT, so that every
    ``finally`` runs (temporary files, locks, worker shutdown); not an Exception, so no
    per-image handler swallows it. The CLI exits 143."""


class VideoError(StyleGradError):
    """A video that cannot be read, decoded or written (``stylegrad video``)."""


def first_line(text: object) -> str:
    """The first line of ``str(text)``, stripped ("" when there is none)."""
    t = str(text).strip()
    return t.splitlines()[0].strip() if t else ""


def error_text(e: BaseException) -> str:
    """One line for any exception: ours (:class:`StyleGradError`) as they are, written for
    users; anything else as ``TypeName: first line of its message`` (or just its type)."""
    if isinstance(e, StyleGradError):
        return str(e)
    first = first_line(e)
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
