"""Every shipped CUDA kernel, run by the CPU emulator through the unmodified ``cuda_ops``
launchers, against its float64 reference: ``stylegrad kernels check --emulate`` as CI runs it.
The rules (2x torch's error + floor, bit-equal schedules, canaries, strict pointers) are in
``stylegrad.kernels.emulator.check``."""
import shutil

import pytest
import torch

from stylegrad.cli.main import main
from stylegrad.kernels import cuda_ops, emulator, registry
from stylegrad.kernels.emulator import check

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")


def test_kernels_check_emulate_passes_and_prints_a_table(capsys):
    rc = main(["kernels", "check", "--emulate"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FAIL" not in out and " of " in out and "cases pass" in out
    # every shipped entry point appears in the table (sum_partials and gram_sum_splits through
    # the loss and Gram launchers that call them)
    for family in ("gram_tiled", "gram_sum_splits", "style_loss", "content_loss", "tv_loss",
                   "relu_backward_accumulate", "sum_partials"):
        assert family in out
    for dtype in ("fp32", "bf16", "fp16"):
        assert f"gram_tiled (+gram_sum_splits)   {dtype}" in out


def test_check_covers_every_registered_entry_point():
    covered = {"gram_tiled", "gram_sum_splits", "style_loss", "content_loss", "tv_loss", "relu_backward_accumulate",
               "sum_partials"}
    for source in registry.SHIPPED:
        for entry in registry.SOURCES[source].entry_points:
            assert entry.rsplit("_", 1)[0] in covered, f"{entry} is not exercised by the emulated check"


def test_random_schedules_give_the_forward_bits():
    """Two seeded random schedules (thread order at every barrier, block order) against the
    forward one, on the kernels with barriers and shuffles."""
    F = torch.randn(2, 100, 4109, generator=torch.Generator().manual_seed(9))
    P = torch.randn(1, 100, 4109, generator=torch.Generator().manual_seed(10))
    res = []
    for sched, seed in (("forward", 0), ("random", 1), ("random", 2)):
        with emulator.session(sched, seed, strict=True):
            Fd = emulator.empty(F.shape, F.dtype).copy_(F)
            Pd = emulator.empty(P.shape, P.dtype).copy_(P)
            G = cuda_ops.gram(Fd)
            loss, D = cuda_ops.style_loss(G, G[:1], 0.5, 2.0)
            closs, cgrad = cuda_ops.content_loss(Fd, Pd)
            res.append([G, loss, D, closs, cgrad])
    for other in res[1:]:
        for a, b in zip(res[0], other):
            assert torch.equal(a, b)


def test_failures_are_reported_not_raised(capsys, monkeypatch):
    monkeypatch.setattr(check, "run_checks", lambda: [check.CaseResult("gram_tiled", "fp32", "-", "B=2 C=1 M=1",
                                                                       3.0, False, "error 3 > allowed 1", 0.1)])
    assert main(["kernels", "check", "--emulate"]) == 1
    out = capsys.readouterr().out
    assert "FAIL gram_tiled fp32 - B=2 C=1 M=1: error 3 > allowed 1" in out


def test_no_compiler_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert main(["kernels", "check", "--emulate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "C++ compiler" in err
