"""Video stylisation with temporal consistency (Ruder, Dosovitskiy & Brox, *Artistic style
transfer for videos*, GCPR 2016): video I/O (:mod:`.io`, PyAV), optical flow and the
forward-backward consistency check (:mod:`.flow`, OpenCV), the temporal loss
(:mod:`.temporal`) and the frame-by-frame job (:mod:`.job`).

Needs the ``video`` extra (``pip install stylegrad[video]``: ``av``, ``opencv-python-headless``).
"""
from stylegrad.errors import ConfigError


def require(module: str):
    """Import ``av`` or ``cv2``, or say which extra installs it (one line)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = {"av": "av", "cv2": "opencv-python-headless"}.get(module, module)
        raise ConfigError(f"stylegrad video needs the package {pkg}: pip install 'stylegrad[video]'") from None
