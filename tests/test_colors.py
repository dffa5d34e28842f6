"""--original-colors: the output's chroma is the content's (within 1/255 in YCbCr), in the API,
the CLI (written files, snapshots, batches, coarse-to-fine) and with every backend that runs here.

The check uses the JFIF YCbCr matrix written out below (not stylegrad.colors), on the 8-bit files
the CLI writes: rounding each RGB channel to 1/255 moves Cb or Cr by at most
(0.169 + 0.331 + 0.5) * 0.5/255 = 0.5/255, so 1/255 (the issue's bar) holds for a correct
recombination with room to spare, while keeping the output's own colours misses it by far
(asserted too, so the check can fail).
"""
import numpy as np
import pytest
import torch
from PIL import Image

from stylegrad import StyleConfig, Stylizer
from stylegrad import colors
from stylegrad.cli.main import main
from stylegrad.errors import ConfigError
from stylegrad.io import images as imgs
from tests.helpers import write_image

TOL = 1.0 / 255
FAST = ["--weights", "random", "--quiet"]


def chroma(rgb):
    """(Cb, Cr) of RGB in [0, 1], (3, H, W) -> (2, H, W), JFIF / BT.601 full range."""
    r, g, b = (rgb.double()[i] for i in range(3))
    cb = 0.5 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return torch.stack([cb, cr])


def read(path):
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def _content(seed=0, h=30, w=40):
    """A colourful content image: saturated blocks (where clipping per channel would shift chroma)
    plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, h, w, generator=g) * 0.3
    x[0, : h // 2, : w // 2] += 0.7
    x[2, h // 2:, w // 2:] += 0.7
    return x.clamp(0, 1)


def test_luminance_and_chroma_match_the_jfif_matrix_and_pillow():
    x = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(1))
    q = (x * 255).round().byte().permute(1, 2, 0).numpy()
    pil = np.asarray(Image.fromarray(q, "RGB").convert("YCbCr"), dtype=np.float64) / 255
    x8 = torch.from_numpy(q).permute(2, 0, 1).float() / 255
    assert np.abs(pil[..., 0] - colors.luma(x8)[0].numpy()).max() <= 1.0 / 255 + 1e-9   # Pillow rounds to 8 bits
    assert np.abs(pil[..., 1:] - chroma(x8).permute(1, 2, 0).numpy()).max() <= 1.0 / 255 + 1e-9


def test_recombination_keeps_the_content_chroma_even_out_of_gamut():
    g = torch.Generator().manual_seed(2)
    content = _content(2)
    output = torch.rand(3, 30, 40, generator=g)
    out = colors.with_content_chroma(output, content)
    assert out.min() >= 0 and out.max() <= 1
    assert (chroma(out) - chroma(content)).abs().max() < 1e-5
    # where the output's luminance fits the content's chroma, it is kept exactly
    yo, yc = colors.luma(output), colors.luma(content)
    fits = (yo >= yc - content.amin(0, keepdim=True)) & (yo <= yc + 1 - content.amax(0, keepdim=True))
    assert fits.float().mean() > 0.3
    assert (colors.luma(out) - yo)[fits].abs().max() < 1e-5
    # clipping each channel instead (neural-style) shifts the chroma of saturated pixels
    naive = (yo + (content - yc)).clamp(0, 1)
    assert (chroma(naive) - chroma(content)).abs().max() > 5 * TOL


def test_luminance_matching():
    g = torch.Generator().manual_seed(3)
    # a content whose luminance spread keeps the matched style inside [0, 1] (no clamping)
    style, content = torch.rand(3, 20, 25, generator=g) * 0.5, 0.3 + 0.4 * torch.rand(3, 30, 40, generator=g)
    m = colors.matched_luminance(style, content)
    assert torch.equal(m[0], m[1]) and torch.equal(m[1], m[2])           # grey
    yc = colors.luma(content)
    assert m[0].mean().item() == pytest.approx(yc.mean().item(), abs=1e-3)
    assert m[0].std(unbiased=False).item() == pytest.approx(yc.std(unbiased=False).item(), rel=1e-3)
    wide = colors.matched_luminance(style, _content(3) * 4 - 1.5)      # would leave [0, 1]: clamped
    assert wide.min() >= 0 and wide.max() <= 1
    flat = colors.matched_luminance(torch.full((3, 4, 4), 0.2), content)   # no division by 0
    assert torch.allclose(flat, torch.full_like(flat, yc.mean().item()), atol=1e-5)


@pytest.mark.parametrize("mode", ["postprocess", "luminance"])
def test_api_batch_snapshots_and_scales_keep_the_content_chroma(mode):
    contents = [_content(4, 18, 24), _content(5, 18, 24).flip(-1)]
    style = torch.rand(3, 33, 27, generator=torch.Generator().manual_seed(6))
    cfg = StyleConfig(weights="random", model="vgg16", backend="torch", size=24, min_size=16, iters=4, iters_last=3,
                      save_every=2, original_colors=mode)
    st = Stylizer(cfg)
    st.set_styles([style])
    snaps = []
    results = st.run_batch(contents, callback=lambda p: snaps.append(p) if p.snapshot is not None else None, names=["a", "b"])
    plain = Stylizer(cfg.replace(original_colors="off"))
    plain.set_styles([style])
    off = plain.run_batch(contents)
    for b, r in enumerate(results):
        assert r.status == "ok"
        assert (chroma(r.image) - chroma(contents[b])).abs().max() <= TOL
        assert (chroma(off[b].image) - chroma(contents[b])).abs().max() > 10 * TOL   # the check can fail
    # every scale's snapshots, against the content at that scale
    assert {p.scale for p in snaps} == {1, 2} and len(snaps) >= 8
    for p in snaps:
        c = imgs.resize_longest(contents[0 if p.image == "a" else 1], max(p.width, p.height))
        assert (chroma(p.snapshot) - chroma(c)).abs().max() <= TOL, (p.scale, p.iter)


def test_luminance_mode_optimises_grey_images_against_matched_styles(monkeypatch):
    content, style = _content(7), torch.rand(3, 33, 27, generator=torch.Generator().manual_seed(8))
    st = Stylizer(StyleConfig(weights="random", backend="torch", size=40, iters=3, original_colors="luminance"))
    st.set_styles([style])
    seen = {}
    real_prepare, real_opt = st.prepare, st.backend.optimize

    def prepare(c, styles_per_image=None):
        seen["content"], seen["styles"] = c, styles_per_image
        return real_prepare(c, styles_per_image)

    def optimize(x0, targets, *a, **k):
        seen["x0"] = x0
        return real_opt(x0, targets, *a, **k)
    monkeypatch.setattr(st, "prepare", prepare)
    monkeypatch.setattr(st.backend, "optimize", optimize)
    st.run(content)
    for t in (seen["content"][0], seen["x0"][0], seen["styles"][0][0]):
        assert torch.allclose(t[0], t[1]) and torch.allclose(t[1], t[2])          # luminance only
    assert torch.allclose(seen["styles"][0][0], colors.matched_luminance(style, content))


def test_api_accepts_true_and_false_and_rejects_others():
    assert StyleConfig(original_colors=True).original_colors == "postprocess"
    assert StyleConfig(original_colors=False).original_colors == "off"
    with pytest.raises(ConfigError, match="--original-colors"):
        StyleConfig(original_colors="yuv")


@pytest.mark.parametrize("backend", ["reference", "torch", "onnxruntime"])
def test_cli_written_file_keeps_the_content_chroma(tmp_path, backend):
    c = tmp_path / "c.png"
    Image.fromarray((_content(9, 24, 32).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(c)
    s = write_image(tmp_path / "s.png", 20, 26, seed=2)
    out = tmp_path / "o.png"
    # the flag alone means postprocess
    assert main(["stylize", str(c), "--original-colors", "--style", str(s), "-o", str(out), "--size", "32",
                 "--iters", "4", "--save-every", "2", "--backend", backend] + FAST) == 0
    content = imgs.load_image(c)
    for f in (out, tmp_path / "o.iter0002.png"):
        assert (chroma(read(f)) - chroma(content)).abs().max() <= TOL, f.name


def test_cli_luminance_with_batches(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray((_content(10 + i, 24, 32).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(d / f"{i}.png")
    s = write_image(tmp_path / "s.png", 20, 26, seed=2)
    out = tmp_path / "out"
    assert main(["stylize", str(d), "--style", str(s), "--out-dir", str(out), "--size", "32", "--iters", "3",
                 "--batch-size", "2", "--original-colors", "luminance", "--backend", "torch"] + FAST) == 0
    for i in range(3):
        assert (chroma(read(out / f"{i}.png")) - chroma(imgs.load_image(d / f"{i}.png"))).abs().max() <= TOL
