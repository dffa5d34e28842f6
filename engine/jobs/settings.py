"""What a job's pixels depend on: the settings dictionary, its hash, and how two differ.

Rule: every :class:`StyleConfig` field is part of the settings **except** the explicit list
:data:`NON_PIXEL_FIELDS` (fields that cannot change an output's bytes). A field added to
``StyleConfig`` later is therefore covered without touching this module. Besides the config
fields the settings hold what the config names only by reference or leaves to the machine:

- ``device_type`` (``cpu`` / ``cuda``): CPU and GPU arithmetic round differently. The device
  *index* is not a setting (``cuda:0`` and ``cuda:1`` of one model compute the same bytes).
- ``cpu_threads`` (CPU jobs only): torch's CPU reductions split their work by thread count,
  so the same image computed with 1 and 2 threads differs in the last bits. A CPU job
  computes every image with exactly this many threads, whatever the number of workers.
- ``weights_sha256`` / ``init_sha256`` / ``content_mask_sha256`` / ``style_masks_sha256``: the
  contents of a weights file, init image or region mask given as a path (the path alone would
  not notice a replaced file).

Style images are not settings: each manifest record carries the hash of the styles used for
its image, and an image whose style changed is redone like an image whose input changed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Dict, List, Optional

from stylegrad.config import StyleConfig
from stylegrad.io.fileio import file_sha256
from stylegrad.model.weights import weights_file

# Fields that never change an output's bytes: where the run happens (the device index; the
# device *type* is kept as ``device_type``), what is reported or written besides the output,
# and the memory limit a run is checked against (it refuses runs, never changes one).
NON_PIXEL_FIELDS = frozenset({"device", "print_every", "save_every", "max_memory"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)                      # "inf": strict JSON, still distinct
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "value") and isinstance(getattr(value, "value"), (str, int)):   # enums
        return value.value
    return repr(value)


def _is_file(value: Any) -> bool:
    """A mask given as a path (not an array or image from the API) that names a file."""
    return isinstance(value, (str, os.PathLike)) and os.path.isfile(value)


def pixel_settings(config: StyleConfig, device_type: str, cpu_threads: Optional[int]) -> Dict[str, Any]:
    """The settings a job's outputs depend on, as a JSON-ready dict (see the module doc)."""
    s: Dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.name not in NON_PIXEL_FIELDS:
            s[f.name] = _jsonable(getattr(config, f.name))
    s["device_type"] = device_type
    if device_type == "cpu":
        s["cpu_threads"] = cpu_threads
    weights = weights_file(config.weights)
    if weights is not None:
        s["weights_sha256"] = file_sha256(weights)
    if config.init not in ("content", "noise") and os.path.isfile(config.init):
        s["init_sha256"] = file_sha256(config.init)
    if _is_file(config.content_mask):
        s["content_mask_sha256"] = file_sha256(config.content_mask)
    if any(_is_file(m) for m in config.style_masks or ()):
        s["style_masks_sha256"] = [file_sha256(m) if _is_file(m) else None for m in config.style_masks]
    return s


def settings_hash(settings: Dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def differing(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """``["iters (10 -> 20)", ...]`` for every key whose value differs (absent counts)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "(absent)"), new.get(k, "(absent)")
        if a != b:
            out.append(f"{k} ({_short(a)} -> {_short(b)})")
    return out


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def styles_digest(style_hashes: List[str]) -> str:
    """One hash for an ordered set of style images (their file hashes, in order)."""
    return hashlib.sha256("\n".join(style_hashes).encode()).hexdigest()
