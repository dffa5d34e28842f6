"""Memory is bounded: the estimate follows the documented figures, a run over --max-memory is
refused before any compute, and the decoder's pixel limit follows the memory (one-line errors)."""
import warnings

import pytest
import torch
from PIL import Image

from stylegrad import StyleConfig, Stylizer
from stylegrad.cli.main import main
from stylegrad.errors import ImageError, MemoryLimitError
from stylegrad.io import images as imgs
from stylegrad.run import memory
from tests.helpers import write_image


SMALL = dict(weights="random", backend="reference", size=16, iters=10, lbfgs_history=5)


FAST = ["--weights", "random", "--backend", "reference", "--lbfgs-history", "5"]


def test_memory_estimate_parts_follow_the_documented_figures():
    cfg = StyleConfig(size=256)
    a = memory.estimate_run(cfg, (256, 256), backend="torch")
    b = memory.estimate_run(cfg.replace(lbfgs_history=10), (256, 256), backend="torch")
    P = 256 * 256
    assert a.parts["optimiser"] - b.parts["optimiser"] == 90 * 2 * 3 * 4 * P     # 24 B/px per history pair
    assert memory.estimate_run(cfg, (256, 256), batch=2, backend="torch").parts["evaluation"] == 2 * a.parts["evaluation"]
    # the saved tensors of stylegrad.terms.backward's doc: 160 B/px masks + 520 B/px features (avg)
    plain = memory.evaluation_bytes_per_pixel(cfg, "torch") - memory.TRANSIENT["torch"] * 256
    assert plain == pytest.approx(160 + 520)
    assert memory.autograd_bytes_per_pixel("vgg19", "avg", cfg.loss_layers()) == pytest.approx(1292)
    assert memory.autograd_bytes_per_pixel("vgg19", "max", cfg.loss_layers()) == pytest.approx(1532)
    # a style scaled 1000 times: the target forward dominates and is refused
    big = memory.estimate_run(cfg.replace(style_scale=1000.0), (256, 256), style_source_hw=[(300, 300)])
    assert "style targets" in big.parts and big.total > 2**40
    with pytest.raises(MemoryLimitError, match="style-scale"):
        memory.check_fits(big, cfg)


def test_runs_over_the_memory_limit_are_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    c = write_image(tmp_path / "c.png", 12, 12)
    built = []
    monkeypatch.setattr(Stylizer, "__init__", lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    for extra in (["--max-memory", "1M"], ["--style-scale", "1000"], ["--size", "100000"]):
        rc = main(["stylize", str(c), "--style", str(c), "-o", str(tmp_path / "o.png")] + FAST + extra)
        err = capsys.readouterr().err
        assert rc == 2 and "would need about" in err and err.count("\n") == 1, (extra, err)
    assert not built
    # the API: Stylizer.run_batch checks before optimising
    monkeypatch.undo()
    st = Stylizer(StyleConfig(**SMALL, max_memory=2**19))
    st.set_styles([torch.rand(3, 8, 8)])
    with pytest.raises(MemoryLimitError, match="--max-memory"):
        st.run(torch.rand(3, 16, 16))


def test_decompression_bomb_limit_follows_the_memory_and_is_one_line(tmp_path):
    p = tmp_path / "big.png"
    Image.new("L", (1000, 1000)).save(p)                    # 1 Mpx, a few KB on disk
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=r"more pixels than --max-memory 1 MiB can decode \(0.04[0-9] Mpx at most;.* or raise --max-memory$") as e:
            imgs.load_image(p, max_bytes=1_000_000)          # ~50 kpx at the decode cost per pixel
        assert "\n" not in str(e.value)
        with pytest.raises(ImageError, match="more pixels"):
            imgs.image_size(p, max_bytes=1_000_000)
        assert imgs.load_image(p, max_bytes=100_000_000).shape == (3, 1000, 1000)
    assert Image.MAX_IMAGE_PIXELS == saved                  # Pillow's global is left as it was
    assert imgs.decode_pixel_limit(2**30) == 2**30 // (memory.DECODE_BYTES + memory.DECODE_EXTRA)
