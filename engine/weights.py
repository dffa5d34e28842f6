"""VGG weights: torchvision's ImageNet checkpoints, a user's state_dict, or random.

``imagenet``       torchvision's VGG19/VGG16 checkpoint from the torch hub cache
                   (``$TORCH_HOME/hub/checkpoints``); downloaded, hash-checked and written
                   atomically when missing.
``PATH``           a torchvision-format state_dict (``features.N.weight``/``features.N.bias``).
``random[:SEED]``  deterministic Kaiming-normal weights (fan-in, ReLU gain), zero bias. For
                   offline demos, tests and benchmarks: results are not ImageNet quality.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from .errors import WeightsError
from .fileio import atomic_write, file_sha256
from .vgg import VGG, ConvLayer, layer_specs

# torchvision's published checkpoints; the hex in the name is the start of the file's SHA-256.
IMAGENET_URLS = {
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}

# (bytes_done, bytes_total or None)
DownloadProgress = Callable[[int, Optional[int]], None]


@dataclass(frozen=True)
class WeightsSource:
    kind: str            # "imagenet" | "path" | "random"
    path: Optional[Path] = None
    seed: int = 0

    @property
    def is_random(self) -> bool:
        return self.kind == "random"


def parse_weights(spec: str) -> WeightsSource:
    if spec == "imagenet":
        return WeightsSource("imagenet")
    if spec == "random" or spec.startswith("random:"):
        seed_text = spec.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise WeightsError(f"--weights random:SEED needs an integer seed, got {seed_text!r}") from None
        return WeightsSource("random", seed=seed)
    return WeightsSource("path", path=Path(spec))


def hub_checkpoint_path(model: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_URLS[model].rsplit("/", 1)[1]


def random_vgg(model: str, seed: int = 0, pool: str = "avg") -> VGG:
    """Kaiming-normal (fan-in, gain sqrt(2)) conv weights, zero bias, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    convs: Dict[str, ConvLayer] = {}
    for s in layer_specs(model):
        if s.kind != "conv":
            continue
        fan_in = s.in_channels * 9
        w = torch.randn(s.out_channels, s.in_channels, 3, 3, generator=g) * (2.0 / fan_in) ** 0.5
        convs[s.name] = ConvLayer(s.name, w, torch.zeros(s.out_channels))
    return VGG(model, convs, pool)


def vgg_from_state_dict(model: str, state: Dict[str, torch.Tensor], pool: str = "avg", origin: str = "") -> VGG:
    convs: Dict[str, ConvLayer] = {}
    where = f" in {origin}" if origin else ""
    for s in layer_specs(model):
        if s.kind != "conv":
            continue
        wk, bk = f"features.{s.torchvision_index}.weight", f"features.{s.torchvision_index}.bias"
        if wk not in state or bk not in state:
            raise WeightsError(f"weights{where} lack {wk!r}/{bk!r} ({s.name}): not a torchvision {model} state_dict")
        w, b = state[wk], state[bk]
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (s.out_channels, s.in_channels, 3, 3):
            raise WeightsError(f"{wk}{where} has shape {tuple(getattr(w, 'shape', ()))}, "
                               f"expected {(s.out_channels, s.in_channels, 3, 3)} for {model}")
        if not isinstance(b, torch.Tensor) or tuple(b.shape) != (s.out_channels,):
            raise WeightsError(f"{bk}{where} has shape {tuple(getattr(b, 'shape', ()))}, expected ({s.out_channels},)")
        convs[s.name] = ConvLayer(s.name, w.detach().float().contiguous(), b.detach().float().contiguous())
    return VGG(model, convs, pool)


def load_state_dict_file(path: Path) -> Dict[str, torch.Tensor]:
    if not path.exists():
        raise WeightsError(f"weights file not found: {path} (use --weights imagenet, random or a state_dict path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise WeightsError(f"cannot load weights {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    return state


def download(url: str, dest: Path, hash_prefix: Optional[str], progress: Optional[DownloadProgress] = None,
             timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` atomically, checking the SHA-256 prefix."""
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fetch(out) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done = 0
            h = hashlib.sha256()
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if hash_prefix and not h.hexdigest().startswith(hash_prefix):
            raise WeightsError(f"downloaded {url} has SHA-256 {h.hexdigest()[:16]}..., expected {hash_prefix}...: "
                               "corrupt download, try again")

    atomic_write(dest, fetch)   # a failed or corrupt download leaves nothing behind


def imagenet_vgg(model: str, pool: str = "avg", progress: Optional[DownloadProgress] = None,
                 allow_download: bool = True) -> VGG:
    path = hub_checkpoint_path(model)
    if not path.exists():
        offline = (f"ImageNet {model} weights are not cached at {path} and could not be downloaded"
                   f" ({{why}}): connect to the internet and retry, pass --weights PATH to a torchvision"
                   f" state_dict, or use --weights random for an offline demo")
        if not allow_download or os.environ.get("STYLEGRAD_OFFLINE") == "1":
            raise WeightsError(offline.format(why="downloads disabled"))
        url = IMAGENET_URLS[model]
        prefix = url.rsplit("-", 1)[1].split(".")[0]
        try:
            download(url, path, prefix, progress)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or e
            raise WeightsError(offline.format(why=str(reason).splitlines()[0] if str(reason) else type(e).__name__)) from None
    return vgg_from_state_dict(model, load_state_dict_file(path), pool, origin=str(path))


def load_vgg(spec: str, model: str = "vgg19", pool: str = "avg",
             progress: Optional[DownloadProgress] = None) -> VGG:
    src = parse_weights(spec)
    if src.kind == "random":
        return random_vgg(model, src.seed, pool)
    if src.kind == "path":
        return vgg_from_state_dict(model, load_state_dict_file(src.path), pool, origin=str(src.path))
    return imagenet_vgg(model, pool, progress)


def weights_identity(spec: str, model: str) -> str:
    """A short stable identifier of the weights (for manifests and caches)."""
    src = parse_weights(spec)
    if src.kind == "random":
        return f"random:{src.seed}"
    path = src.path if src.kind == "path" else hub_checkpoint_path(model)
    return "sha256:" + file_sha256(path)[:16] if path.exists() else f"missing:{path}"
