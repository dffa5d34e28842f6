"""Image reading, conversion, resizing rules and atomic writing."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from stylegrad.errors import ImageError
from stylegrad.io import images as imgs


def test_exif_orientation_is_honoured(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = 255                           # left half white
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6                          # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes(), quality=100)
    t = imgs.load_image(p)
    assert tuple(t.shape) == (3, 20, 10)      # displayed portrait
    assert t[:, :5].mean() > 0.9 and t[:, -5:].mean() < 0.1   # left half now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_modes_become_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((9, 7, 3)) * 255).astype(np.uint8)).convert(mode)
    p = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    img.save(p)
    t = imgs.load_image(p)
    assert tuple(t.shape) == (3, 9, 7) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() <= 1.0


def test_rgba_composited_over_white(tmp_path):
    p = tmp_path / "t.png"
    Image.new("RGBA", (4, 3), (0, 0, 0, 0)).save(p)
    assert torch.allclose(imgs.load_image(p), torch.ones(3, 3, 4))


def test_16bit_grayscale_keeps_range(tmp_path):
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    t = imgs.load_image(p)
    assert t.shape == (3, 1, 3)
    assert t[0, 0].tolist() == pytest.approx([0.0, 32768 / 65535, 1.0], abs=1e-6)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        imgs.load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match="not an image"):
        imgs.load_image(bad)
    with pytest.raises(ImageError, match="folder"):
        imgs.load_image(tmp_path)


def test_sizes_and_no_resampling_when_equal():
    t = torch.rand(3, 37, 51)
    assert imgs.resize_longest(t, 51) is t                       # untouched, not resampled
    assert tuple(imgs.resize_longest(t, 17).shape) == (3, 12, 17)
    assert tuple(imgs.resize_longest(t, 1).shape) == (3, 1, 1)
    assert tuple(imgs.resize_longest(torch.rand(3, 1, 1), 5).shape) == (3, 5, 5)
    assert imgs.scaled_size(1000, 3, 10) == (10, 1)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tiff"])
def test_save_by_extension(tmp_path, ext):
    t = torch.rand(3, 11, 13)
    p = imgs.save_image(t, tmp_path / f"o{ext}")
    with Image.open(p) as im:
        assert im.size == (13, 11) and im.format == imgs.SAVE_FORMATS[ext]
    if ext in (".png", ".tiff"):   # lossless: values round-trip to 1/255
        assert torch.allclose(imgs.load_image(p), t, atol=0.5 / 255 + 1e-6)


def test_unknown_extension_refused(tmp_path):
    with pytest.raises(ImageError, match="unknown extension"):
        imgs.save_image(torch.rand(3, 2, 2), tmp_path / "o.xyz")


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    out.write_bytes(b"previous result")

    def broken_save(self, fp, format=None, **kw):
        fp.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageError, match="No space left"):
        imgs.save_image(torch.rand(3, 4, 4), out)
    assert out.read_bytes() == b"previous result"             # old file intact
    assert os.listdir(tmp_path) == ["out.png"]                 # no temporary left behind


def test_in_memory_inputs():
    a = (np.random.default_rng(0).random((5, 6, 3)) * 255).astype(np.uint8)
    t = imgs.to_tensor(a)
    assert t.shape == (3, 5, 6) and torch.allclose(t, torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    assert imgs.to_tensor(Image.fromarray(a)).allclose(t)
    assert imgs.to_tensor(t[None]).shape == (3, 5, 6)
    with pytest.raises(ImageError):
        imgs.to_tensor(np.zeros((2, 2, 5)))
    with pytest.raises(ImageError, match="NaN"):
        imgs.to_tensor(torch.full((3, 2, 2), float("nan")))


def _rotated_jpeg(path, w=40, h=20):
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 6                       # "rotate 90 CW": width and height swap when loaded
    Image.new("RGB", (w, h), (200, 10, 10)).save(path, exif=exif)
    return path


def test_header_size_is_the_loaded_size_for_an_exif_rotated_photo(tmp_path):
    from PIL import Image
    from stylegrad.io.images import header_size, image_size, load_image

    p = _rotated_jpeg(tmp_path / "r.jpg")
    with Image.open(p) as im:
        assert header_size(im) == (40, 20)
    assert image_size(p) == (40, 20) == tuple(load_image(p).shape[-2:])


def test_job_batches_use_the_loaded_size_and_the_resize_filter(tmp_path):
    from stylegrad.jobs.runner import plan_batches, planned_shape

    p = _rotated_jpeg(tmp_path / "r.jpg", w=30, h=13)
    assert planned_shape(p, 10) == (10, 4)                     # 13 * 10 / 30 = 4.33: rounded
    assert planned_shape(p, 10, "bilinear") == (10, 4)
    q = _rotated_jpeg(tmp_path / "q.jpg", w=30, h=17)           # 5.67: rounds to 6, truncates to 5
    assert planned_shape(q, 10) == (10, 6) and planned_shape(q, 10, "bilinear") == (10, 5)
    s = _rotated_jpeg(tmp_path / "s.jpg", w=30, h=16)           # 5.33: 5 either way
    assert plan_batches([q, s], 10, 2) == [[0], [1]]
    assert plan_batches([q, s], 10, 2, "bilinear") == [[0, 1]]
    assert planned_shape(tmp_path / "missing.jpg", 10) is None


def test_style_side_rounds_or_truncates_like_the_content():
    from stylegrad.io.images import style_side

    assert style_side(100, 0.555) == 56 and style_side(100, 0.555, "bilinear") == 55
    assert style_side(3, 0.1) == 1


def test_float_tiffs_are_read_by_their_range(tmp_path):
    a = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(a, "F").save(tmp_path / "unit.tif")
    Image.fromarray(a * 255, "F").save(tmp_path / "byte.tif")
    Image.fromarray(a * 300, "F").save(tmp_path / "over.tif")
    Image.fromarray(a - 0.5, "F").save(tmp_path / "neg.tif")
    unit, byte = imgs.load_image(tmp_path / "unit.tif"), imgs.load_image(tmp_path / "byte.tif")
    assert torch.allclose(unit[0], torch.from_numpy(a)) and torch.allclose(byte, unit, atol=1e-6)
    for bad in ("over.tif", "neg.tif"):
        with pytest.raises(ImageError, match=r"expected \[0, 1\] or \[0, 255\]"):
            imgs.load_image(tmp_path / bad)


def test_arrays_outside_their_range_or_ambiguous_layouts_are_refused():
    u8 = (np.arange(60) % 256).astype(np.uint8).reshape(5, 4, 3)
    ref = imgs.to_tensor(u8)
    assert torch.equal(imgs.to_tensor(u8.astype(np.int64)), ref)            # int64 0..255 = 8-bit
    assert torch.equal(imgs.to_tensor(torch.from_numpy(u8).permute(2, 0, 1).contiguous()), ref)   # uint8 tensor
    with pytest.raises(ImageError, match=r"expected \[0, 1\]"):
        imgs.to_tensor(u8.astype(np.float32))                               # floats in 0..255
    with pytest.raises(ImageError, match="expected 0..255"):
        imgs.to_tensor(u8.astype(np.int64) * 10)
    with pytest.raises(ImageError, match=r"expected \[0, 1\]"):
        imgs.to_tensor(torch.rand(3, 4, 5) * 255)
    with pytest.raises(ImageError, match=r"could be \(H, W, C\) or \(C, H, W\)"):
        imgs.to_tensor(np.zeros((3, 7, 4), np.float32))                      # CHW of width 4
    with pytest.raises(ImageError, match=r"looks like \(C, H, W\)"):
        imgs.to_tensor(np.zeros((3, 7, 9), np.float32))
    assert imgs.to_tensor(torch.rand(3, 7, 3)).shape == (3, 7, 3)           # tensors are always CHW
    slack = imgs.to_tensor(np.full((2, 2), 1 + 1e-4, np.float32))           # rounding slack is clipped
    assert float(slack.max()) == 1.0
