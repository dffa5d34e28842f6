"""NVRTC compilation of every kernel (no GPU needed) and the loader's disk cache."""

import pytest
import torch

import stylegrad.kernels as K
from stylegrad.kernels import loader, registry

try:  # CI installs these through the project's `test` extra; see pyproject.
    loader.nvrtc_version()
    HAVE_NVRTC, WHY = True, ""
except K.KernelUnavailableError as exc:
    HAVE_NVRTC, WHY = False, str(exc)
needs_nvrtc = pytest.mark.skipif(not HAVE_NVRTC, reason=f"cuda.core / NVRTC not importable: {WHY}")


@needs_nvrtc
def test_every_kernel_compiles_clean_for_sm80_and_sm90():
    results = K.check_all(["sm_80", "sm_90"])
    assert {(r.kernel, r.arch) for r in results} == {(k, a) for k in registry.SOURCES for a in ("sm_80", "sm_90")}
    failed = [r for r in results if not r.ok]
    assert not failed, K.format_check_table(results)


@needs_nvrtc
def test_check_reports_warnings_as_failures(tmp_path, monkeypatch):
    # A source with an unused variable must fail the check, proving the
    # warnings-are-failures rule is live (not just that our sources are clean).
    monkeypatch.setattr(loader, "read_source",
                        lambda name: 'extern "C" __global__ void tv_loss_f32(float* x, long long n) { int unused = 1; }')
    monkeypatch.setattr(registry, "SOURCES", {"tv_loss": registry.SOURCES["tv_loss"]})
    import stylegrad.kernels.check as check

    monkeypatch.setattr(check, "SOURCES", registry.SOURCES)
    (result,) = check.check_all(["sm_80"])
    assert not result.ok and "unused" in result.message
    assert "FAIL" in K.format_check_table([result])


@needs_nvrtc
def test_check_reports_missing_entry_points(monkeypatch):
    import stylegrad.kernels.check as check

    monkeypatch.setattr(loader, "read_source", lambda name: 'extern "C" __global__ void other(float* x) { x[0] = 1.0f; }')
    monkeypatch.setattr(check, "SOURCES", {"tv_loss": registry.SOURCES["tv_loss"]})
    (result,) = check.check_all(["sm_90"])
    assert not result.ok and "tv_loss_f32" in result.message


@needs_nvrtc
def test_compile_error_is_reported(monkeypatch):
    monkeypatch.setattr(loader, "read_source", lambda name: "this is not C++")
    with pytest.raises(K.KernelCompileError, match="tv_loss"):
        loader.compile_source("tv_loss", "sm_80")


@needs_nvrtc
def test_disk_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv(loader.CACHE_ENV, str(tmp_path))
    first = loader.cached_cubin("sum_partials", "sm_80")
    assert loader.cache_dir() == tmp_path / "kernels"     # one cache root, a folder per cache
    files = list(loader.cache_dir().iterdir())
    assert len(files) == 1 and files[0].read_bytes() == first and files[0].suffix == ".cubin"
    assert "sm_80" in files[0].name and "nvrtc" in files[0].name

    def no_compile(*args):
        raise AssertionError("cache hit expected, but the loader compiled")

    monkeypatch.setattr(loader, "compile_source", no_compile)
    assert loader.cached_cubin("sum_partials", "sm_80") == first
    # A different arch or a changed source is a different key -> compiles.
    with pytest.raises(AssertionError, match="cache hit expected"):
        loader.cached_cubin("sum_partials", "sm_90")
    real_read = loader.read_source
    monkeypatch.setattr(loader, "read_source", lambda name: real_read(name) + "\n// edited\n")
    with pytest.raises(AssertionError, match="cache hit expected"):
        loader.cached_cubin("sum_partials", "sm_80")


@needs_nvrtc
def test_empty_cache_file_is_recompiled(tmp_path, monkeypatch):
    monkeypatch.setenv(loader.CACHE_ENV, str(tmp_path))
    path = loader.cache_path("sum_partials", "sm_80")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # e.g. left by a crash of a non-atomic writer
    assert len(loader.cached_cubin("sum_partials", "sm_80")) > 0
    assert path.stat().st_size > 0
    assert not list(loader.cache_dir().glob("*.tmp")) and not list(loader.cache_dir().glob(".*.tmp"))  # renamed, not left


def test_registry_symbols():
    assert registry.symbol("gram", "bf16") == ("gram", f"gram_{registry.PROMOTED['gram']}_bf16")
    assert registry.symbol("gram_sum_splits", "f32") == ("gram", "gram_sum_splits_f32")
    assert registry.symbol("sum_partials", "f64") == ("sum_partials", "sum_partials_f64")
    with pytest.raises(ValueError, match="unknown gram variant"):
        registry.symbol("gram", "f32", "fastest")
    for op, variants in registry.VARIANTS.items():
        assert registry.PROMOTED[op] in variants
        for source, prefix in variants.values():
            assert all(f"{prefix}_{s}" in registry.SOURCES[source].entry_points for s in registry.DTYPE_SUFFIXES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_launcher_without_gpu_raises_clear_error(monkeypatch):
    monkeypatch.delenv("STYLEGRAD_EMULATE", raising=False)
    with pytest.raises(K.KernelUnavailableError, match="CUDA"):
        K.cuda_ops.gram(torch.zeros(1, 3, 4))
    with pytest.raises(K.KernelUnavailableError):
        K.cuda_ops.tv_loss(torch.zeros(1, 1, 2, 2))
    with pytest.raises(K.KernelUnavailableError):
        loader.get_kernel("tv_loss", "tv_loss_f32", "cuda")


def test_import_and_cpu_ops_work_without_cuda_python():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['cuda'] = None; sys.modules['cuda.core'] = None\n"
        "import torch, stylegrad.kernels as K\n"
        "assert K.gram(torch.ones(1, 2, 3)).sum() == 12\n"
        "try:\n    K.loader.nvrtc_version()\nexcept K.KernelUnavailableError as e:\n    print('unavailable:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("unavailable: cuda-python") and out.stdout.count("\n") == 1


# -- driver / NVRTC compatibility and launches under the tensor's device (mocked cuda.core) ----

@pytest.mark.parametrize("driver,nvrtc,ok,hint", [
    ((12, 4), (13, 0), False, "stylegrad[cuda12]"),
    ((13, 0), (13, 2), True, ""),      # minor-version compatibility: cubins run on older minors
    ((12, 8), (12, 9), True, ""),
    ((11, 8), (12, 9), False, "an NVRTC 11.x matching the driver"),
])
def test_driver_older_than_nvrtc_is_one_line_error(monkeypatch, driver, nvrtc, ok, hint):
    monkeypatch.setattr(loader, "driver_version", lambda: driver)
    monkeypatch.setattr(loader, "nvrtc_version", lambda: nvrtc)
    if ok:
        loader.check_driver()
        return
    with pytest.raises(K.KernelUnavailableError) as e:
        loader.check_driver()
    msg = str(e.value)
    assert "\n" not in msg and hint in msg and f"CUDA {driver[0]}.{driver[1]}" in msg


def test_every_launch_makes_the_tensors_device_current(monkeypatch):
    """No per-thread cache of the current device: after torch.cuda.set_device(1) (or anything
    else) changed the context, the next launch on device 0 binds device 0 again."""
    calls = []

    class Dev:
        def __init__(self, index):
            self.index = index

        def set_current(self):
            calls.append(("current", self.index))

    class Stream:
        @staticmethod
        def from_handle(h):
            return ("stream", h)

    core = type("core", (), {"Device": Dev, "Stream": Stream, "LaunchConfig": lambda **kw: kw,
                             "launch": staticmethod(lambda stream, cfg, k, *a: calls.append(("launch", k)))})
    fake_stream = type("S", (), {"cuda_stream": 7})()
    monkeypatch.setattr(loader, "_core", lambda: core)
    monkeypatch.setattr(loader, "_device_index", lambda device: torch.device(device).index or 0)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda index=None: fake_stream)
    loader.launch("k0", (1,), 32, (), "cuda:0")
    loader.launch("k1", (1,), 32, (), "cuda:1")
    loader.launch("k0", (1,), 32, (), "cuda:0")
    assert calls == [("current", 0), ("launch", "k0"), ("current", 1), ("launch", "k1"), ("current", 0),
                     ("launch", "k0")]
