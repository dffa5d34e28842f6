"""The kernel benchmark harness and the development variants of bench/kernels/.

Without a GPU the harness cannot time anything, but it parses its options, formats results
and -- through the CPU emulator -- checks every development variant against its float64
reference (``bench_kernels.py --emulate``), so they stay correct until promoted or dropped."""

import importlib.util
import math
import shutil
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[2] / "bench" / "kernels" / "bench_kernels.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_kernels", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_harness_options_table_and_targets():
    bench = _load()
    args = bench.parse_args(["--batch", "2", "--out", "x.json"])
    assert args.batch == 2 and args.out == Path("x.json")
    row = bench._row("gram[tiled]", "relu1_1", "float32", 2.0, 3.0, 2e12, "TFLOP/s", 50.0)
    assert row["speedup"] == 1.5 and row["rate"] == 1000.0 and row["pct_peak"] == 2000.0
    bw = bench._row("content_loss", "relu1_1", "float32", 1.0, 1.0, 2e9, "GB/s", 2500.0)
    assert bw["rate"] == 2000.0 and bw["pct_peak"] == 80.0
    assert bench.targets([row, bw]) == {"gram_speedup_ge_1.3_at_relu1-4": True, "fused_losses_ge_70pct_bandwidth": True}
    assert "gram[tiled]" in bench.format_table([row, bw])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit; a GPU host runs the benchmark")
def test_harness_exits_cleanly_without_cuda(capsys):
    assert _load().main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")
def test_development_variants_pass_in_the_emulator(capsys):
    assert _load().main(["--emulate"]) == 0
    out = capsys.readouterr().out
    for kernel in ("gram[naive]", "gram[tiled]", "normalize", "clamp_", "adam_step_[device step]", "lbfgs_dots",
                   "lbfgs_axpy_"):
        assert kernel in out
    assert "FAIL" not in out


def test_development_variants_join_the_one_registry():
    _load()
    from stylegrad.kernels import loader, registry

    assert registry.symbol("gram", "f32", "naive") == ("gram_naive", "gram_naive_f32")
    assert registry.symbol("gram", "f32") == ("gram", "gram_tiled_f32")  # promoted: unchanged
    assert registry.symbol("lbfgs_axpy", "f32") == ("lbfgs", "lbfgs_axpy_f32")
    assert "__global__ void clamp_f32" in loader.read_source("clamp")
    assert "clamp" not in registry.SHIPPED and "gram_naive" not in registry.SHIPPED
    with pytest.raises(ValueError, match="shipped"):
        registry.add_development_source(registry.KernelSource("gram", ("x",), PATH.parent))


def test_torch_twins_of_normalize_and_clamp():
    variants = _load().variants
    x = torch.tensor([[[[1.0]], [[2.0]], [[4.0]]]])
    out = variants.normalize_torch(x, [1.0, 0.0, 2.0], [1.0, 4.0, 0.5])
    assert torch.equal(out.flatten(), torch.tensor([0.0, 0.5, 4.0]))
    y = torch.tensor([-1.0, 0.5, 2.0, float("nan")])
    variants.clamp_torch_(y)
    assert torch.equal(y[:3], torch.tensor([0.0, 0.5, 1.0])) and math.isnan(y[3].item())
    with pytest.raises(ValueError, match="entries"):
        variants.normalize_torch(torch.zeros(1, 3, 2, 2), [0.0, 0.0], [1.0, 1.0])
