"""Errors that reach users as one plain line (the CLI prints ``str(err)`` and exits)."""


class StyleGradError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(StyleGradError, ValueError):
    """An invalid option or combination of options."""


class ImageError(StyleGradError):
    """An image that cannot be read or written."""


class WeightsError(StyleGradError):
    """VGG weights that cannot be found, downloaded or loaded."""


class BackendUnavailableError(StyleGradError):
    """A backend that is not installed or does not support the device."""
