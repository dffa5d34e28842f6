"""Backend ``cuda``: the whole iteration on the GPU, replayed from one CUDA graph.

One iteration = forward (cuDNN convolutions through torch functional ops) -> Gram / losses /
feature gradients (``stylegrad.kernels`` CUDA kernels) -> hand-written backward (transposed
convolutions, ReLU-mask accumulation kernel, pooling backward) -> optimiser step
(``stylegrad.optim``'s L-BFGS / Adam: device-side state, no host branching). After
``WARMUP_ITERS`` eager iterations (which also autotune cuDNN and compile the kernels) one
iteration is captured in a ``torch.cuda.CUDAGraph`` and replayed. The host synchronises only
when losses are reported (every ``print_every`` iterations) or a snapshot is taken; the losses
of every iteration are written on the device into a history buffer, so reports lose nothing.

Precision (``--precision``):
  fp32  convolutions in strict fp32 (cuDNN TF32 off; PyTorch's default would allow it)
  tf32  fp32 tensors, TF32 tensor-core convolutions and matmuls
  bf16  weights, activations and backward convolutions in bf16; Gram accumulation in fp32
        (the kernels take bf16 and accumulate fp32, so the Gram matrix cannot overflow as the
        anchors' fp16 attempts did); loss values, the image, its gradient and the optimiser
        state in fp32.

Batches: B images of one size are optimised together, each with its own L-BFGS history
(``per_image=True``), so a batch gives the results of B separate runs.

Memory per pixel (per image of the batch; VGG19, default layers, bf16, avg pooling; computed,
not yet measured on a GPU): L-BFGS history 2 x 100 x 3 x 4 B = 2400 B (it dominates: Adam
needs 3 x 3 x 4 B); backward masks 160 B (``stylegrad.terms.backward``); loss-layer features in bf16
~260 B; transient forward/backward activations at full resolution (64 channels, a few live at
once) ~3 x 128 B (bf16) plus the fp32 image, gradient and L-BFGS direction vectors ~100 B:
about 3.3 KB per pixel, so a 3840x2160 image (8.3 Mpx) needs about 28 GB plus cuDNN workspace.
Not verified on a GPU: see the closing notes / bench/NOTES.md.

Diverged runs: the host checks the loss history at every report and every
``DIVERGENCE_CHECK_EVERY`` iterations; each image's first non-finite loss is reported with its
exact iteration, and when every image of the batch has one the loop stops there.

If capture fails (for instance a launcher that cannot be captured), the loop continues eagerly
and ``graph_status`` says why; results are the same, only slower.

On the CPU (``--device cpu``) the backend runs only under ``STYLEGRAD_EMULATE=1``: the same loop,
eagerly (no graph), every kernel launched through the CPU emulator of ``stylegrad.kernels``
(same ``.cu`` sources, compiled by g++). That is how its logic is tested without a GPU.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from stylegrad import kernels

from stylegrad.backends.base import Evaluation
from stylegrad.backends.torch_backend import TorchBackend
from stylegrad.errors import ConfigError, error_text
from stylegrad.optim import make_optimizer
from stylegrad.terms.targets import Targets

WARMUP_ITERS = 2
# The host looks at the losses (one synchronisation) at every report and at least every this
# many iterations, so a diverged run stops within that many iterations of its first non-finite
# loss, which is reported exactly (the device keeps every iteration's losses).
DIVERGENCE_CHECK_EVERY = 10


def _new_divergences(hist: torch.Tensor, start: int, end: int, first_bad: Dict[int, int]) -> Dict[int, list]:
    """Images whose first non-finite loss lies in history rows [start, end): recorded in
    ``first_bad`` (image -> iteration) and returned as {iteration: [images]}."""
    bad = (~torch.isfinite(hist[start:end].sum(1))).cpu()      # (rows, B)
    new: Dict[int, list] = {}
    if not bool(bad.any()):
        return new
    for b in range(bad.shape[1]):
        if b in first_bad:
            continue
        rows = torch.nonzero(bad[:, b])
        if rows.numel():
            first_bad[b] = start + int(rows[0])
            new.setdefault(first_bad[b], []).append(b)
    return new


class CudaBackend(TorchBackend):
    """The ``torch`` backend's forward/backward plus CUDA kernels and a graph-replayed loop."""

    name = "cuda"
    precisions = ("fp32", "tf32", "bf16")
    # NCHW, not channels-last: the NVRTC kernels take contiguous (B, C, H*W) features; a
    # channels-last Gram kernel ((H*W, C) row-major) is not written yet. Which layout wins on
    # a GPU (cuDNN prefers NHWC for bf16) awaits a measurement.
    memory_format = torch.contiguous_format
    # L-BFGS search direction: "two_loop" (~1100 small kernels per step at history 100) or
    # "compact" (~76 ops; Byrd-Nocedal-Schnabel). Both match torch.optim.LBFGS on CPU; which is
    # faster inside a CUDA graph awaits a GPU (bench/gpu_check.py times both). None: the
    # config's (--lbfgs-direction, default two_loop).
    lbfgs_direction = None
    use_graph = True          # False: the same loop, eagerly (tests compare the two)

    def __init__(self, vgg, config, device, use_cuda_kernels: Optional[bool] = None):
        """``use_cuda_kernels``: None picks ``kernels.ops_for(device)`` (the CUDA kernels on a
        GPU or under the emulator, else the torch implementations); False forces the torch
        implementations (tests compare the two). Decided here, once."""
        super().__init__(vgg, config, device)
        self.ops = kernels.torch_ops if use_cuda_kernels is False else kernels.ops_for(self.device)
        if use_cuda_kernels and self.ops is not kernels.cuda_ops:
            raise kernels.KernelUnavailableError(kernels.loader.device_problem(self.device) or "no CUDA kernels")
        if self.config.tol is not None:
            raise ConfigError("--tol is not run by the cuda backend's captured loop yet; use --backend torch")
        if self.config.optimizer == "lbfgs" and self.config.lbfgs_rules == "torch":
            raise ConfigError("--lbfgs-rules torch is not run by the cuda backend's captured loop; use --backend "
                              "torch or reference")
        if self.config.tv_norm == "l1" and self.ops is kernels.cuda_ops:
            raise ConfigError("--tv-norm l1 has no CUDA kernel: the cuda backend runs --tv-norm l2 only; "
                              "use --backend torch or reference")
        self.graph_status = "not run"

    @classmethod
    def supports(cls, device: torch.device) -> Tuple[bool, str]:
        device = torch.device(device)
        if device.type == "cpu" and kernels.loader.emulating():
            return True, ""
        if device.type != "cuda":
            return False, ("backend 'cuda' needs --device cuda (or STYLEGRAD_EMULATE=1 to run its kernels "
                           "in the CPU emulator)")
        if not torch.cuda.is_available():
            return False, "backend 'cuda' needs a CUDA GPU and a CUDA build of torch"
        try:
            import cuda.core  # noqa: F401
        except ImportError:
            return False, "backend 'cuda' needs cuda-python: pip install 'stylegrad[cuda]'"
        return True, ""

    @contextlib.contextmanager
    def _precision(self):
        if self.device.type != "cuda":
            yield
            return
        tf32 = self.precision != "fp32"
        old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old

    def features(self, image: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        with self._precision():
            return super().features(image, layers)

    def gram(self, f: torch.Tensor) -> torch.Tensor:
        return self.ops.gram(f.contiguous())

    def evaluate(self, image: torch.Tensor, targets: Targets) -> Evaluation:
        with self._precision():
            return super().evaluate(image, targets)

    # -- the loop ------------------------------------------------------------------------------
    def loop_state(self, x0: torch.Tensor, targets: Targets,
                   iters: Optional[int] = None) -> Tuple[torch.Tensor, Callable[[], None], torch.Tensor]:
        """(x, iteration, history): the optimised image (updated in place), the function that
        runs one iteration -- exactly what gets captured in the CUDA graph -- and the (iters + 1,
        3, B) device buffer it writes each iteration's content / style / TV losses into
        (``iters``: default ``config.iters``; a coarse-to-fine scale passes its own)."""
        cfg = self.config
        iters = cfg.iters if iters is None else iters
        x = x0.detach().to(self.device, torch.float32).clone().contiguous()
        B = x.shape[0]
        opt = make_optimizer(x, cfg, per_image=True, direction=self.lbfgs_direction)
        hist = torch.zeros(iters + 1, 3, B, device=self.device)
        k_dev = torch.zeros(1, dtype=torch.long, device=self.device)

        def iteration() -> None:
            ev = self.evaluate(x, targets)
            hist.index_copy_(0, k_dev, torch.stack([ev.content, ev.style, ev.tv]).float()[None])
            opt.step(ev.grad)
            k_dev.add_(1)

        return x, iteration, hist

    def optimize(self, x0: torch.Tensor, targets: Targets, report=None, keep_image=lambda k: False,
                 iters: Optional[int] = None, pixel_term=None) -> torch.Tensor:
        if pixel_term is not None:
            # an extra pixel term (the video temporal loss) is not in the captured graph: the
            # eager loop of the base class runs it (stylegrad info says so)
            self.graph_status = "eager (pixel term)"
            return super().optimize(x0, targets, report, keep_image, iters, pixel_term)
        cfg = self.config
        iters = cfg.iters if iters is None else iters
        x, iteration, hist = self.loop_state(x0, targets, iters)
        B = x.shape[0]
        graph = None
        use_graph = self.use_graph and self.device.type == "cuda" and iters > WARMUP_ITERS
        self.graph_status = "eager (cpu)" if self.device.type != "cuda" else "eager"
        # Warm-up iterations and the capture run on one side stream (PyTorch's documented
        # pattern: libraries set up per-stream state lazily during the first calls).
        side = torch.cuda.Stream(self.device) if use_graph else None
        t_last, k_last = time.perf_counter(), 0
        checked = 0                      # history rows [0, checked) were looked at
        first_bad: Dict[int, int] = {}   # image -> its first iteration with a non-finite loss
        for k in range(iters):
            snap = x.clone() if keep_image(k) else None
            if graph is None and use_graph and k == WARMUP_ITERS:
                graph = self._capture(iteration, side)
            if graph is not None:
                graph.replay()
            elif side is not None:
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    iteration()
                torch.cuda.current_stream(self.device).wait_stream(side)
            else:
                iteration()
            reporting = report is not None and (k % cfg.print_every == 0 or snap is not None)
            if reporting or (k + 1) % DIVERGENCE_CHECK_EVERY == 0 or k == iters - 1:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                now = time.perf_counter()
                ms = (now - t_last) * 1e3 / (k + 1 - k_last)
                t_last, k_last = now, k + 1
                new = _new_divergences(hist, checked, k + 1, first_bad)
                checked = k + 1
                # report each image's first non-finite loss (the verdict), then this iteration;
                # when every image has one, stop there, as the eager loop does
                stop = max(first_bad.values()) if len(first_bad) == B else None
                todo = sorted(set(new) | ({k} if reporting else set()))
                cancelled = False
                for j in todo:
                    if report is not None and (stop is None or j <= stop):
                        h = hist[j]
                        if report(j, Evaluation(h[0], h[1], h[2], torch.empty(0)), ms, snap if j == k else None) is True:
                            cancelled = True   # the report asked to stop (cancellation)
                if stop is not None or cancelled:
                    return x
        t0 = time.perf_counter()
        final = self.evaluate(x, targets)
        if report is not None:
            report(iters, final, (time.perf_counter() - t0) * 1e3, x.clone())
        return x

    def _capture(self, iteration, stream):
        """Capture one iteration (warm-up already ran eagerly on ``stream``). Capture records
        and does not execute, so a failed capture leaves x and the optimiser state (all on the
        device) untouched and the loop goes on eagerly. On failure: None."""
        try:
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                iteration()
            self.graph_status = "captured"
            return graph
        except Exception as e:  # capture unsupported: carry on eagerly, say why
            torch.cuda.synchronize(self.device)
            self.graph_status = f"eager: capture failed ({error_text(e)})"
            return None
