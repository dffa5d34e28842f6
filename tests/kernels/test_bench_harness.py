"""The benchmark harness imports, parses its options and formats results
without a GPU (it cannot time anything here)."""

import importlib.util
from pathlib import Path

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


def test_harness_exits_cleanly_without_cuda(capsys):
    if torch.cuda.is_available():
        return
    assert _load().main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
