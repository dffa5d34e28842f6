"""Reading, resizing and writing images. Everything in between is a float32 tensor in [0, 1].

- EXIF orientation is honoured; grayscale, RGBA/LA (composited over white), palette and
  16-bit inputs become RGB.
- Value ranges (what a pixel value means; anything else is refused with the range expected):

  ==========================  ======================================================
  8-bit files, uint8 arrays   0..255
  16-bit files, uint16        0..65535
  32-bit integer files        0..255 when no value is above 255, else 0..65535
  other integer arrays        0..255 (int8..int64, uint32, uint64)
  float files (TIFF "F")      [0, 1] as is; [0, 255] (a value above 1) divided by 255
  float arrays and tensors    [0, 1] (API: values in 0..255 are refused, divide first)
  ==========================  ======================================================

  Float values may stray from [0, 1] by half an 8-bit step (1/510) and are clipped.
- Layout: numpy arrays are (H, W), (H, W, 1|3|4) (PIL's and imageio's layout); tensors are
  (3, H, W), (1, H, W) or (1, 3, H, W) (torch's). A numpy array whose first and last axes are
  both 3 or 4 could be either (a CHW image 3 or 4 pixels wide, or an HWC one 3 or 4 pixels
  tall) and is refused: pass a PIL image or a tensor.
- Only regular files are read (a FIFO or a device would block or never end).
- Pillow's decompression-bomb guard stays on, with its limit set to the pixels the memory
  available now can decode (``stylegrad.run.memory``); over it is a one-line ImageError.
- ``--size`` is the longest side; an image whose longest side already equals it is used as is
  (no resampling).
- Outputs are written atomically (``stylegrad.io.fileio``).
"""
from __future__ import annotations

import os
import stat
import threading
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from stylegrad.errors import ImageError
from stylegrad.io import fileio
from stylegrad.io.fileio import atomic_write

SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor, str, os.PathLike]
# what one image is (a str is also a Sequence: never taken as a list of images)
SINGLE_IMAGE_TYPES = (Image.Image, np.ndarray, torch.Tensor, str, os.PathLike)

FLOAT_SLACK = 1.0 / 510      # half an 8-bit step: float values this far outside [0, 1] are clipped
_ORIENT_SWAPS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_GUARD_LOCK = threading.Lock()

DECODE_BYTES = 12          # a decoded image: float32 RGB
DECODE_EXTRA = 12          # while decoding (measured 23.3 B/px peak in all): Pillow's buffer, the uint8 array


def _describe_range(a: np.ndarray) -> str:
    return f"{float(np.min(a)):.6g}..{float(np.max(a)):.6g}"


def _float_from_unit(a: np.ndarray, what: str, allow_255: bool) -> np.ndarray:
    """float32 values in [0, 1] from float values in [0, 1] (or [0, 255] when ``allow_255``)."""
    with np.errstate(all="ignore"):
        if not np.isfinite(a).all():
            raise ImageError(f"{what} has NaN or infinite values")
        lo, hi = float(np.min(a)), float(np.max(a))
        if hi <= 1.0 + FLOAT_SLACK:
            if lo >= -FLOAT_SLACK:
                return np.clip(a, 0.0, 1.0).astype(np.float32, copy=False)
        elif allow_255 and lo >= -FLOAT_SLACK * 255 and hi <= 255.0 * (1 + FLOAT_SLACK):
            return np.clip(a.astype(np.float32) / np.float32(255.0), 0.0, 1.0)
    expected = "[0, 1] or [0, 255]" if allow_255 else "[0, 1] (divide 0..255 values by 255)"
    raise ImageError(f"{what} has values {_describe_range(a)}; expected {expected}")


def _float_from_int(a: np.ndarray, what: str) -> np.ndarray:
    """float32 in [0, 1] from integer values, by the table in the module docstring."""
    if a.size == 0:
        return a.astype(np.float32)
    lo, hi = int(np.min(a)), int(np.max(a))
    if a.dtype == np.uint8:
        peak = 255
    elif a.dtype == np.uint16:
        peak = 65535
    else:
        peak = 255
        if lo < 0 or hi > 255:
            raise ImageError(f"{what} ({a.dtype}) has values {lo}..{hi}; expected 0..255 "
                             f"(pass uint16 for 16-bit values, or floats in [0, 1])")
    out = a.astype(np.float32)
    out /= np.float32(peak)
    return out


def _pil_mode_to_array(img: Image.Image, what: str) -> np.ndarray:
    """(H, W) float32 in [0, 1] of a one-channel integer or float PIL image."""
    mode = img.mode
    if mode == "F":
        return _float_from_unit(np.asarray(img, dtype=np.float32), what, allow_255=True)
    a = np.asarray(img).astype(np.int64 if mode == "I" else np.uint16)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ImageError(f"{what} has values {lo}..{hi}; expected 0..255 or 0..65535")
    peak = 65535.0 if mode.startswith("I;16") or hi > 255 else 255.0
    return (a.astype(np.float32) / np.float32(peak)).astype(np.float32)


def _pil_to_tensor(img: Image.Image, what: str = "image") -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] of a PIL image (EXIF orientation applied)."""
    if img.width < 1 or img.height < 1:
        raise ImageError(f"{what} has no pixels ({img.width}x{img.height})")
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = torch.from_numpy(np.ascontiguousarray(_pil_mode_to_array(img, what)))
        return a.expand(3, -1, -1).contiguous()
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    u8 = torch.from_numpy(np.array(img, dtype=np.uint8))          # (H, W, 3), 3 B/px
    out = torch.empty((3, img.height, img.width), dtype=torch.float32)
    out.copy_(u8.permute(2, 0, 1))                                 # one float32 copy, 12 B/px
    return out.div_(255.0)


def _check_regular(p: Path) -> None:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageError(f"image not found: {p}") from None
    except OSError as e:
        raise ImageError(f"cannot read image {p}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"expected an image file, got a folder: {p}")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
        raise ImageError(f"{p} is {kind}, not a regular file; only regular files are read")


def decode_pixel_limit(max_bytes: Optional[int] = None) -> Optional[int]:
    """The most pixels an image may have to be decoded: what ``max_bytes`` (default: the
    memory available now) holds at DECODE_BYTES + DECODE_EXTRA bytes per decoded pixel. None when
    the available memory is unknown (Pillow's own limit then applies)."""
    from stylegrad.system import available_bytes

    budget = max_bytes if max_bytes is not None else available_bytes()
    return None if budget is None else max(1, int(budget // (DECODE_BYTES + DECODE_EXTRA)))


def _open(p: Path, max_bytes: Optional[int]) -> Image.Image:
    """Image.open with Pillow's decompression-bomb guard set to :func:`decode_pixel_limit` and
    its warning turned into an ImageError."""
    limit = decode_pixel_limit(max_bytes)
    with _GUARD_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        if limit is not None:
            Image.MAX_IMAGE_PIXELS = limit
        try:
            return Image.open(p)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            cap = limit if limit is not None else saved
            why = (f"--max-memory {max_bytes / 2**20:.0f} MiB" if max_bytes is not None
                   else "the memory available now")
            raise ImageError(f"image {p} has more pixels than {why} can decode ({cap / 1e6:.2g} Mpx at most; "
                             "decoding needs the full image before --size applies): downscale it first"
                             + (" or raise --max-memory" if max_bytes is not None else "")) from None
        except UnidentifiedImageError:
            raise ImageError(f"not an image Pillow can read: {p}") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"cannot read image {p}: {e}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def header_size(img: Image.Image) -> Tuple[int, int]:
    """(height, width) of an opened, not yet decoded image as :func:`load_image` returns it:
    the header's size, sides swapped when its EXIF orientation turns it by 90 degrees. The one
    place that reads an image's size from its header (files here, uploads in the service)."""
    w, h = img.size
    try:
        if img.getexif().get(0x0112) in _ORIENT_SWAPS:
            w, h = h, w
    except Exception:  # a broken EXIF block: load_image will say so, or ignore it as Pillow does
        pass
    return h, w


def image_size(path: Union[str, os.PathLike], max_bytes: Optional[int] = None) -> Tuple[int, int]:
    """(height, width) of an image file as :func:`load_image` would return it (EXIF rotation
    applied), read from its header; the same checks as :func:`load_image` before decoding."""
    p = Path(path)
    _check_regular(p)
    with _open(p, max_bytes) as img:
        h, w = header_size(img)
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels: {p}")
    return h, w


def load_image(path: Union[str, os.PathLike], max_bytes: Optional[int] = None) -> torch.Tensor:
    """Read an image file as a (3, H, W) float32 tensor in [0, 1] (see the module docstring
    for value ranges). ``max_bytes``: the memory its decoding may use (default: what is
    available now)."""
    p = Path(path)
    _check_regular(p)
    with _open(p, max_bytes) as img:
        if img.width < 1 or img.height < 1:
            raise ImageError(f"image has no pixels: {p}")
        try:
            img.load()
            return _pil_to_tensor(img, str(p))
        except ImageError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageError(f"cannot read image {p}: {e}") from None


def _array_to_tensor(a: np.ndarray, what: str) -> torch.Tensor:
    shape = a.shape
    if a.ndim == 3 and shape[0] in (3, 4) and shape[2] in (3, 4):
        raise ImageError(f"{what} of shape {shape} could be (H, W, C) or (C, H, W); numpy images are read as "
                         f"(H, W, C): pass a PIL image, or a torch tensor (C, H, W)")
    if a.ndim == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        raise ImageError(f"{what} of shape {shape} looks like (C, H, W); numpy images are (H, W) or "
                         f"(H, W, 1|3|4): use a.transpose(1, 2, 0), or pass a torch tensor")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"{what} must be (H, W) or (H, W, 1|3|4); got shape {shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"{what} has no pixels (shape {shape})")
    f = _values(a[..., :3], what)
    if f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).contiguous()


def _values(a: np.ndarray, what: str) -> np.ndarray:
    """float32 values in [0, 1] of an array by its dtype (module docstring), or an ImageError."""
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ImageError(f"{what} has dtype {a.dtype}; expected uint8, uint16, another integer type or float")
    if np.issubdtype(a.dtype, np.integer):
        return _float_from_int(a, what)
    return _float_from_unit(a, what, allow_255=False)


def to_tensor(image: ImageLike, name: str = "image") -> torch.Tensor:
    """Any supported input -> (3, H, W) float32 CPU tensor in [0, 1] (module docstring:
    layouts and value ranges). This is the one path every input of the API takes; anything
    that is not an image (a meta, sparse or quantized tensor, a closed PIL image, another
    type) is an ImageError that names the argument, ``name`` ("content", "styles[1]", ...)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        what = f"{name} (PIL image)"
        try:
            return _pil_to_tensor(image, what)
        except ImageError:
            raise
        except (ValueError, OSError, SyntaxError, AttributeError, Image.DecompressionBombError) as e:
            # a closed image ("Operation on closed image"), a lazily read file gone bad, ...
            raise ImageError(f"{what} cannot be read: {e}") from None
    if isinstance(image, np.ndarray):
        return _array_to_tensor(image, f"{name} (numpy array)")
    if isinstance(image, torch.Tensor):
        return _tensor_to_tensor(image, f"{name} (tensor)")
    raise ImageError(f"{name}: unsupported image type {type(image).__name__}: use a path, PIL image, numpy array "
                     f"or tensor")


def _tensor_to_tensor(image: torch.Tensor, what: str) -> torch.Tensor:
    if image.is_meta:
        raise ImageError(f"{what} is a meta tensor: it has a shape but no data")
    if getattr(image, "is_nested", False):
        raise ImageError(f"{what} is a nested tensor; pass one (3, H, W) tensor")
    if image.layout != torch.strided:
        raise ImageError(f"{what} has layout {image.layout}; pass a dense tensor (t.to_dense())")
    if image.is_quantized:
        raise ImageError(f"{what} is quantized ({image.dtype}); pass t.dequantize() or a uint8/float tensor")
    t = image.detach()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ImageError(f"{what} must be (3, H, W), (1, H, W) or (1, 3, H, W); got shape {tuple(image.shape)}")
    if t.shape[-1] < 1 or t.shape[-2] < 1:
        raise ImageError(f"{what} has no pixels (shape {tuple(image.shape)})")
    if t.dtype == torch.bool or t.is_complex():
        raise ImageError(f"{what} has dtype {t.dtype}; expected uint8 or float in [0, 1]")
    a = t.cpu()
    if a.dtype in (torch.bfloat16, torch.float16) or a.dtype.is_floating_point and a.dtype not in (torch.float32, torch.float64):
        a = a.float()
    try:
        arr = a.numpy()
    except (TypeError, RuntimeError) as e:   # a dtype numpy has no counterpart for
        raise ImageError(f"{what} has dtype {t.dtype}, which cannot be read as pixels ({e})") from None
    f = torch.from_numpy(np.ascontiguousarray(_values(arr, what)))
    return f.expand(3, -1, -1).contiguous() if f.shape[0] == 1 else f.contiguous()


def scaled_size(h: int, w: int, longest: int, resize_filter: str = "lanczos") -> Tuple[int, int]:
    """(height, width) with the longest side ``longest``: rounded, or with ``bilinear`` truncated
    as neural-style-pt does (``int(size / max(W, H) * side)``; never below 1 px)."""
    if max(h, w) == longest:
        return h, w
    s = float(longest) / max(h, w)
    if resize_filter == "bilinear":
        return max(1, int(s * h)), max(1, int(s * w))
    return max(1, round(h * s)), max(1, round(w * s))


def style_side(longest: int, style_scale: float, resize_filter: str = "lanczos") -> int:
    """The longest side the style images are resized to for an output whose longest side is
    ``longest`` (``--style-scale``): rounded, or with ``bilinear`` truncated as neural-style-pt's
    ``int(size * style_scale)``; at least 1."""
    side = longest * style_scale
    return max(1, int(side) if resize_filter == "bilinear" else round(side))


def resize_longest(image: torch.Tensor, longest: int, resize_filter: str = "lanczos") -> torch.Tensor:
    """Resize a (3, H, W) tensor so its longest side is ``longest`` (``StyleConfig.resize_filter``:
    Lanczos, or neural-style-pt's bilinear; via Pillow)."""
    h, w = image.shape[-2:]
    nh, nw = scaled_size(h, w, longest, resize_filter)
    return resize(image, nh, nw, resize_filter)


def resize(image: torch.Tensor, nh: int, nw: int, resize_filter: str = "lanczos") -> torch.Tensor:
    """(3, H, W) in [0, 1] to (3, nh, nw). ``bilinear`` on an image of 8-bit values resamples the
    8-bit RGB image, as neural-style-pt (Pillow, then /255); other images channel by channel
    in float."""
    h, w = image.shape[-2:]
    if (nh, nw) == (h, w):
        return image
    a = image.numpy()
    if resize_filter == "bilinear":
        q = np.rint(a * 255.0)
        if a.shape[0] == 3 and np.abs(a * 255.0 - q).max(initial=0.0) < 1e-3:
            rgb = Image.fromarray(q.astype(np.uint8).transpose(1, 2, 0), mode="RGB").resize((nw, nh), Image.BILINEAR)
            return torch.from_numpy(np.asarray(rgb).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))
    method = Image.BILINEAR if resize_filter == "bilinear" else Image.LANCZOS
    chans = []
    for c in a:
        chans.append(np.asarray(Image.fromarray(c, mode="F").resize((nw, nh), method), dtype=np.float32))
    return torch.from_numpy(np.clip(np.stack(chans), 0.0, 1.0))


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    t = image.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    a = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(a, mode="RGB")


def check_output_path(path: Union[str, os.PathLike]) -> Path:
    p = Path(path)
    if p.is_dir():
        raise ImageError(f"output path is a folder: {p} (-o takes an image file; for a folder use --out-dir)")
    if p.suffix.lower() not in SAVE_FORMATS:
        raise ImageError(f"cannot write {p}: unknown extension {p.suffix or '(none)'!r}; "
                         f"use one of {', '.join(sorted(SAVE_FORMATS))}")
    if p.exists() and p.is_dir():
        raise ImageError(f"output path is a folder: {p}")
    return p


def same_file(a: Union[str, os.PathLike], b: Union[str, os.PathLike]) -> bool:
    return fileio.same_file(a, b)


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
        atomic_write(p, lambda f: pil.save(f, format=fmt, **kwargs), size_hint=pil.width * pil.height * 3 + 1024)
    except OSError as e:
        raise ImageError(f"cannot write {p}: {e.strerror or e}") from None
    return p
