"""Reading, resizing and writing images. Everything in between is a float32 tensor in [0, 1].

- EXIF orientation is honoured; grayscale, RGBA/LA (composited over white), palette and
  16-bit inputs become RGB.
- ``--size`` is the longest side; an image whose longest side already equals it is used as is
  (no resampling).
- Outputs are written atomically (temporary file in the same folder, fsync, rename).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .fileio import atomic_write
from .errors import ImageError

SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor, str, os.PathLike]


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a / peak, 0.0, 1.0)
        return np.repeat(a[..., None], 3, axis=2).astype(np.float32)
    if mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def load_image(path: Union[str, os.PathLike]) -> torch.Tensor:
    """Read an image file as a (3, H, W) float32 tensor in [0, 1]."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {p}")
    if p.is_dir():
        raise ImageError(f"expected an image file, got a folder: {p}")
    try:
        with Image.open(p) as img:
            img.load()
            arr = _pil_to_array(img)
    except UnidentifiedImageError:
        raise ImageError(f"not an image Pillow can read: {p}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read image {p}: {e}") from None
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"image has no pixels: {p}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def to_tensor(image: ImageLike) -> torch.Tensor:
    """Any supported input -> (3, H, W) float32 CPU tensor in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        arr = _pil_to_array(image)
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise ImageError(f"numpy image must be (H, W), (H, W, 1|3|4); got shape {image.shape}")
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        elif a.dtype == np.uint16:
            a = a.astype(np.float32) / 65535.0
        else:
            a = a.astype(np.float32)
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        a = a[..., :3]
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()
        return _check_tensor(t)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ImageError(f"tensor image must be (3, H, W) or (1, 3, H, W); got shape {tuple(image.shape)}")
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        return _check_tensor(t.float().cpu().contiguous())
    raise ImageError(f"unsupported image type {type(image).__name__}: use a path, PIL image, numpy array or tensor")


def _check_tensor(t: torch.Tensor) -> torch.Tensor:
    if t.shape[-1] < 1 or t.shape[-2] < 1:
        raise ImageError("image has no pixels")
    if not torch.isfinite(t).all():
        raise ImageError("image has NaN or infinite values")
    return t


def scaled_size(h: int, w: int, longest: int) -> Tuple[int, int]:
    if max(h, w) == longest:
        return h, w
    s = longest / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_longest(image: torch.Tensor, longest: int) -> torch.Tensor:
    """Resize a (3, H, W) tensor so its longest side is ``longest`` (Lanczos, via Pillow)."""
    h, w = image.shape[-2:]
    nh, nw = scaled_size(h, w, longest)
    return resize(image, nh, nw)


def resize(image: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if (nh, nw) == (h, w):
        return image
    chans = []
    for c in image.numpy():
        chans.append(np.asarray(Image.fromarray(c, mode="F").resize((nw, nh), Image.LANCZOS), dtype=np.float32))
    return torch.from_numpy(np.clip(np.stack(chans), 0.0, 1.0))


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    t = image.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    a = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(a, mode="RGB")


def check_output_path(path: Union[str, os.PathLike]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in SAVE_FORMATS:
        raise ImageError(f"cannot write {p}: unknown extension {p.suffix or '(none)'!r}; "
                         f"use one of {', '.join(sorted(SAVE_FORMATS))}")
    if p.exists() and p.is_dir():
        raise ImageError(f"output path is a folder: {p}")
    return p


def same_file(a: Union[str, os.PathLike], b: Union[str, os.PathLike]) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return os.path.realpath(pa) == os.path.realpath(pb)


def save_image(image: torch.Tensor, path: Union[str, os.PathLike]) -> Path:
    """Write atomically: a partial file never appears at ``path``."""
    p = check_output_path(path)
    fmt = SAVE_FORMATS[p.suffix.lower()]
    pil = tensor_to_pil(image)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ImageError(f"cannot write {p}: folder {parent} does not exist")
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    try:
        atomic_write(p, lambda f: pil.save(f, format=fmt, **kwargs))
    except OSError as e:
        raise ImageError(f"cannot write {p}: {e.strerror or e}") from None
    return p
