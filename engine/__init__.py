"""stylegrad: fast, dependable optimisation-based neural style transfer (Gatys et al.)."""
from stylegrad.config import StyleConfig
from stylegrad.errors import StyleGradError
from stylegrad.run.stylizer import Progress, StyleResult, Stylizer, stylize

try:
    from importlib.metadata import version as _version

    __version__ = _version("stylegrad")
except Exception:  # not installed (source checkout)
    __version__ = "0.1.0"

__all__ = ["StyleConfig", "StyleGradError", "Progress", "StyleResult", "Stylizer", "stylize", "__version__"]
