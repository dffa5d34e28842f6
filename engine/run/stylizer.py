"""The Python API: :class:`Stylizer` (reusable) and :func:`stylize` (one call)."""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from stylegrad import colors
from stylegrad import terms
from stylegrad.backends import create_backend, resolve_backend_and_precision
from stylegrad.backends.base import Backend, Evaluation
from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError, DivergedError, ImageError, StalledError
from stylegrad.io import images as imgs
from stylegrad.model.vgg import VGG
from stylegrad.model.weights import DownloadProgress, load_vgg, parse_weights
from stylegrad.run import memory
from stylegrad.run import scales
from stylegrad.terms.targets import TargetBuilder, Targets


@dataclass(frozen=True)
class Progress:
    """One iteration, as reported to callbacks. Losses are the weighted terms; loss = their sum.

    ``iter`` k is the image after k updates (0: the initial image) of scale ``scale`` of
    ``scales`` (coarse-to-fine, ``min_size``; 1 of 1 otherwise), whose image is ``width`` x
    ``height`` and runs ``iters`` iterations. ``snapshot`` holds the current image (3, H, W) at
    ``save_every`` points and at the last iteration of each scale, else None; with
    ``original_colors`` it already has the content's colours.
    """

    image: str
    iter: int
    iters: int
    loss: float
    content: float
    style: float
    tv: float
    ms: float
    snapshot: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)
    scale: int = 1
    scales: int = 1
    width: int = 0
    height: int = 0
    stopped: bool = False    # --tol ended this scale here, before its ``iters``
    pixel_term: float = 0.0     # the weighted extra pixel term of run_batch(pixel_term=...), in loss


# A callback that returns False cancels the run: it stops at the next iteration and its
# results have status "cancelled" with the image so far. None (or anything else) goes on.
ProgressCallback = Callable[[Progress], Optional[bool]]


@dataclass
class StyleResult:
    """One image's outcome. ``status``: ``ok``; ``diverged`` (the loss became non-finite) or
    ``stalled`` (no progress: see :func:`check_progress`), with ``message`` saying what
    happened and ``image`` None -- a failed run never hands out its NaN or unchanged image;
    ``cancelled`` (a progress callback returned False): ``image`` is the image so far (at the
    full output size), ``message`` says at which iteration it stopped."""

    image: Optional[torch.Tensor]  # (3, H, W) float32 in [0, 1], CPU; None unless ok or cancelled
    history: List[Progress]
    seconds: float
    backend: str
    status: str = "ok"
    message: str = ""
    precision: str = "fp32"        # what ran (--precision auto resolved)

    @property
    def final_loss(self) -> float:
        return self.history[-1].loss

    @property
    def initial_loss(self) -> float:
        return self.history[0].loss

    @property
    def last_scale_initial_loss(self) -> float:
        """The loss at iteration 0 of the last (full-size) scale; ``initial_loss`` without
        coarse-to-fine."""
        last = self.history[-1].scale
        return next(p.loss for p in self.history if p.scale == last)

    def raise_for_status(self) -> "StyleResult":
        """Raise :class:`DivergedError` / :class:`StalledError` unless the run is ok."""
        if self.status == "diverged":
            # the first non-finite loss, or (a loss that grew) the last report
            bad = next((p for p in self.history if not math.isfinite(p.loss)), self.history[-1])
            good = [p for p in self.history if p.iter < bad.iter and math.isfinite(p.loss)]
            raise DivergedError(self.message, self, bad.iter, good[-1].iter if good else None,
                                good[-1].loss if good else None)
        if self.status == "stalled":
            raise StalledError(self.message, self)
        return self


# A run "stalls" when, after STALL_MIN_ITERS or more iterations from the content or noise, the
# loss is still above STALL_FRACTION of its initial value, or when the image did not change
# (no pixel moved by half a quantisation step) although the loss was not 0.
STALL_MIN_ITERS = 20
STALL_FRACTION = 0.5


def check_progress(history: List[Progress], init: str, moved: float) -> Tuple[str, str]:
    """(status, message) of one image's run from its reported losses and the largest pixel
    change ``moved`` between the initial and final image (both clamped to [0, 1]).

    ok means the final loss is finite and below the initial one (which is above 0), and the
    image moved. diverged: a non-finite loss, or a final loss above the initial one. stalled:
    a loss of 0 at the start (nothing to optimise), a final loss not below the initial one,
    and see above."""
    for p in history:
        if not math.isfinite(p.loss):
            good = [q for q in history if q.iter < p.iter]
            last = f"last finite loss {good[-1].loss:.4g} at iteration {good[-1].iter}" if good else "no finite loss"
            return "diverged", (f"diverged: the loss became {p.loss} at iteration {p.iter} ({last}); "
                                f"try --optimizer adam, a smaller --lr or a smaller --style-weight")
    first, last = history[0], history[-1]
    if last.loss > first.loss:
        return "diverged", (f"diverged: the loss grew from {first.loss:.4g} to {last.loss:.4g} in {last.iter} "
                            f"iterations; try --optimizer adam, a smaller --lr or a smaller --style-weight")
    if first.loss <= 0:
        return "stalled", (f"stalled: nothing to optimise, the loss was {first.loss:.4g} at iteration 0 (the "
                           f"start already matches every target; check --style-weight, --content-weight and --init)")
    if moved < 0.5 / 255 and init != "given":   # a given start (a video's warm start) may be the optimum
        return "stalled", (f"stalled: the image did not change in {last.iter} iterations "
                           f"(loss {first.loss:.4g} -> {last.loss:.4g})")
    if last.loss >= first.loss:
        return "stalled", (f"stalled: the loss never fell below its initial {first.loss:.4g} in {last.iter} "
                           f"iterations; try --optimizer adam or check --style-weight")
    if last.iter >= STALL_MIN_ITERS and init in ("content", "noise") and last.loss > STALL_FRACTION * first.loss:
        return "stalled", (f"stalled: the loss fell only from {first.loss:.4g} to {last.loss:.4g} in "
                           f"{last.iter} iterations; try --optimizer adam or check --style-weight")
    return "ok", ""


def parse_device(spec: str) -> torch.device:
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {spec!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {spec!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


def _one_call_at_a_time(method):
    """Hold the Stylizer's lock for the whole call (see :class:`Stylizer`, "Threads")."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


class Stylizer:
    """Reusable stylisation engine: weights, backend and style targets are built once.

    >>> s = Stylizer(StyleConfig(size=256, weights="random"))
    >>> result = s.run("photo.jpg", ["painting.jpg"])           # doctest: +SKIP

    Threads: a Stylizer may be shared between threads. Its public methods hold one lock for
    the whole call, so calls from several threads run one after another, never interleaved:
    ``run(content, styles=[painting])`` always uses its own painting (and leaves it set for
    later calls, as :meth:`set_styles`). A shared Stylizer therefore runs one image at a time;
    for parallel runs give each thread (or device) its own Stylizer. A ``callback`` runs
    inside the call, holding the lock: it may not call this Stylizer from another thread and
    wait for that call.
    """

    def __init__(self, config: Optional[StyleConfig] = None, *, vgg: Optional[VGG] = None,
                 download_progress: Optional[DownloadProgress] = None):
        self.config = config or StyleConfig()
        self.device = parse_device(self.config.device)
        # before the weights load (maybe a download): a combination no backend runs fails now
        backend, precision = resolve_backend_and_precision(self.config.backend, self.device, self.config.precision,
                                                           self.config.size)
        if precision != self.config.precision:      # precision auto: what runs here, from now on
            self.config = self.config.replace(precision=precision)
        terms.check_inputs(self.config, None, None)    # masks read and agreeing, before the weights load
        self.vgg = (vgg or load_vgg(self.config.weights, self.config.model, self.config.pool,
                                    download_progress, self.config.preprocess)).with_pool(self.config.pool)
        # from here on the config is concrete: the weights' input convention and the style
        # weight (None: the convention's default) are filled in
        self.config = self.config.resolved(self.vgg.preprocess)
        self.backend: Backend = create_backend(backend, self.vgg, self.config, self.device)
        self.targets = TargetBuilder(self.backend, self.config, self.device)
        # the state a run uses and changes (styles and their targets, the backend's buffers,
        # graphs and optimiser state) belongs to one call at a time
        self._lock = threading.RLock()

    @property
    def weights_are_random(self) -> bool:
        return parse_weights(self.config.weights).is_random

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @_one_call_at_a_time
    def close(self) -> None:
        self.backend.close()

    # -- styles and targets ------------------------------------------------------------------
    @_one_call_at_a_time
    def set_styles(self, styles: Sequence[imgs.ImageLike]) -> None:
        """The style images every run uses unless it is given its own (targets cached per size)."""
        self.targets.set_styles(styles)

    @_one_call_at_a_time
    def prepare(self, content: torch.Tensor,
                styles_per_image: Optional[Sequence[Sequence[imgs.ImageLike]]] = None) -> Tuple[torch.Tensor, Targets]:
        """Resize a batch (B, 3, H, W) or image (3, H, W) and build its targets: shared style
        targets (set_styles), or one blend per image (``styles_per_image``: B lists)."""
        if content.ndim == 3:
            content = imgs.resize_longest(content, self.config.size, self.config.resize_filter)[None]
        content = content.to(self.device)
        return content, self.targets.build(content, styles_per_image)

    @_one_call_at_a_time
    def initial_image(self, content: torch.Tensor) -> torch.Tensor:
        init = self.config.init
        if init == "content":
            return content.clone()
        if init == "noise":
            # one noise image, the same for every image of a batch: what each would get alone
            g = torch.Generator().manual_seed(self.config.seed)
            noise = torch.rand((1,) + tuple(content.shape[1:]), generator=g)
            return noise.expand_as(content).contiguous().to(self.device)
        t = imgs.resize(imgs.load_image(init), content.shape[-2], content.shape[-1], self.config.resize_filter)
        return t[None].expand_as(content).contiguous().to(self.device)

    @_one_call_at_a_time
    def run(self, content: imgs.ImageLike, styles: Optional[Sequence[imgs.ImageLike]] = None,
            callback: Optional[ProgressCallback] = None, name: str = "image", *,
            last_finite: bool = False) -> StyleResult:
        """Stylise one content image; returns the image and the loss history. A run that
        diverges or stalls raises :class:`DivergedError` / :class:`StalledError`.

        Cancelling: a ``callback`` that returns False stops the run at the next iteration; the
        result then has ``status == "cancelled"`` and the image so far (nothing is raised).

        ``last_finite=True``: a diverged run returns instead, with ``status`` "diverged", its
        ``message`` and as ``image`` the last iterate whose loss was finite (DivergedError
        still when there is none). It costs a copy of the image per iteration."""
        if styles is not None:
            self.set_styles(styles)
        result = self.run_batch([content], callback=callback, names=[name], last_finite=last_finite)[0]
        if last_finite and result.status == "diverged" and result.image is not None:
            return result
        return result.raise_for_status()

    @_one_call_at_a_time
    def estimate_memory(self, size_hw: Tuple[int, int], batch: int = 1,
                        style_source_hw: Optional[Sequence[Tuple[int, int]]] = None) -> memory.MemoryEstimate:
        """Estimated peak memory of optimising ``batch`` images of ``size_hw`` (output size)
        with this Stylizer's weights already loaded (``stylegrad.run.memory``)."""
        if style_source_hw is None:
            style_source_hw = self.targets.style_sizes()
        return memory.estimate_run(self.config, size_hw, batch, style_source_hw, backend=self.backend.name,
                                   include_weights=False)

    @_one_call_at_a_time
    def run_batch(self, contents: Sequence[imgs.ImageLike], callback: Optional[ProgressCallback] = None,
                  names: Optional[Sequence[str]] = None,
                  styles: Optional[Sequence[Sequence[imgs.ImageLike]]] = None, *,
                  last_finite: bool = False, init: Optional[torch.Tensor] = None,
                  pixel_term=None, iters: Optional[int] = None) -> List[StyleResult]:
        """Optimise several content images of one size together.

        ``styles``: one list of style images per content image (per-image targets); default,
        the styles of :meth:`set_styles` for all. Each image has its own optimiser state, so a
        batch gives the results of separate runs. Losses are reported per image. Images whose
        run diverged or stalled come back with that ``status`` and no image (nothing raised,
        so the others are not lost); with ``last_finite=True`` a diverged image comes back
        with its last iterate whose loss was finite, when there is one (see :meth:`run`).
        A ``callback`` that returns False cancels the whole batch at the next iteration:
        every image not failed before comes back ``cancelled`` with its image so far.

        Before any compute, the run's peak memory is estimated (at the full size) and a run
        over the available memory (or ``max_memory``) raises
        :class:`~stylegrad.errors.MemoryLimitError`.

        Coarse-to-fine (``min_size``, ``stylegrad.run.scales``): one optimisation per scale, each
        started from the previous result upsampled, with targets for its size; the history
        holds every scale's reports (``Progress.scale``), so ``initial_loss`` is the first
        scale's and ``final_loss`` the last's. ``original_colors``: see ``stylegrad.colors``.

        ``init``: the initial image (B, 3, H, W) at the output size instead of ``config.init``
        (a video's warm start); ``pixel_term``: an extra weighted term on the pixels, ``x ->
        (value (B,), gradient)``, added to every evaluation (``Backend.optimize``; the video
        temporal loss). Both need a single scale (no ``min_size``). ``iters``: this run's
        iterations instead of ``config.iters`` (a video's first frame runs more).
        """
        cfg = self.config
        if isinstance(contents, imgs.SINGLE_IMAGE_TYPES) or not isinstance(contents, (list, tuple)):
            raise ImageError(f"contents must be a list of images, got {type(contents).__name__} "
                             f"(for one image use run())")
        if callback is not None and not callable(callback):
            raise ConfigError(f"callback must be a function of one Progress, got {type(callback).__name__}")
        if (init is not None or pixel_term is not None) and cfg.min_size is not None:
            raise ConfigError("a given initial image or pixel term (stylegrad video) needs one scale: drop --min-size")
        if len(contents) == 0:
            raise ConfigError("run_batch needs at least one content image")
        if names is not None and len(names) != len(contents):
            raise ConfigError(f"{len(names)} name(s) given for {len(contents)} content image(s)")
        sources = [imgs.to_tensor(c, "content" if len(contents) == 1 else f"contents[{i}]")
                   for i, c in enumerate(contents)]
        sizes = {imgs.scaled_size(t.shape[-2], t.shape[-1], cfg.size, cfg.resize_filter) for t in sources}
        if len(sizes) != 1:
            raise ImageError("images of a batch must have the same size after resizing: got "
                             + ", ".join(f"{w}x{h}" for h, w in sorted(sizes)))
        if styles is not None:     # read once here (sizes for the estimate), used by prepare()
            styles = [[imgs.to_tensor(s, f"styles[{i}][{j}]") for j, s in enumerate(group)]
                      for i, group in enumerate(styles)]
        style_hw = None if styles is None else [tuple(s.shape[-2:]) for group in styles for s in group]
        shared_hw = self.targets.style_sizes() if self.targets.styles is not None else None
        for group_hw in ([shared_hw] if styles is None else
                         [[tuple(s.shape[-2:]) for s in group] for group in styles]):
            # the terms' own checks (masks of the images' aspect ratios), before any work
            terms.check_inputs(cfg, [tuple(t.shape[-2:]) for t in sources], group_hw)
        size_hw = next(iter(sizes))
        memory.check_fits(self.estimate_memory(size_hw, len(sources), style_hw), cfg, self.device,
                          f"optimising {len(sources)} image(s) of {size_hw[1]}x{size_hw[0]} px")
        full = [imgs.resize_longest(t, cfg.size, cfg.resize_filter) for t in sources]
        del sources
        n = len(full)
        names = list(names) if names is not None else [f"image{i}" for i in range(n)]
        t_start = time.perf_counter()
        run_styles = self._styles_for(full, styles)
        histories: List[List[Progress]] = [[] for _ in full]
        verdicts: List[Tuple[str, str]] = [("ok", "") for _ in full]   # the first failure of each image
        diverged: set = set()   # images whose first non-finite loss was already reported
        good: Optional[dict] = {} if last_finite else None   # image -> (iteration, scale, last finite iterate)
        # with last_finite every iterate is handed to report (the loops copy x where keep is true)
        keep = (lambda i: True) if last_finite else self._keep
        x: Optional[torch.Tensor] = None
        out = None
        cancel: dict = {}   # set by the reporter when the callback returns False: {"iter", "scale"}
        for sc in scales.plan(cfg if iters is None else cfg.replace(iters=iters)):
            rgb = torch.stack(full if sc.is_last else [imgs.resize_longest(t, sc.size, cfg.resize_filter) for t in full])
            content, targets = self.prepare(colors.to_luminance(rgb) if self._luminance else rgb, run_styles)
            if x is None and init is not None:
                x0 = init.to(self.device, torch.float32).expand_as(content).contiguous()
            elif x is None:
                x0 = self.initial_image(content)
                x0 = colors.to_luminance(x0) if self._luminance else x0
            else:
                x0 = scales.upsample(x, content.shape[-2], content.shape[-1])
                for b in range(n):        # an image that failed restarts from its content (its
                    if verdicts[b][0] != "ok":   # verdict stands), so no NaN reaches the batch
                        x0[b] = content[b]
            scale_histories: List[List[Progress]] = [[] for _ in full]
            report = self._reporter(sc, rgb, names, scale_histories, diverged, callback, good, cancel)
            extra = {} if pixel_term is None else {"pixel_term": pixel_term}
            x = self.backend.optimize(x0, targets, report, keep, iters=sc.iters, **extra)
            out = x.clamp(0, 1).cpu()
            moved = (out - x0.clamp(0, 1).cpu()).abs().flatten(1).amax(1).tolist()
            if cancel:
                where = f"iteration {cancel['iter']}" + (f" of scale {sc.index} of {sc.count}" if sc.count > 1 else "")
                for b in range(n):
                    histories[b].extend(scale_histories[b])
                    if verdicts[b][0] == "ok":
                        verdicts[b] = ("cancelled", f"cancelled at {where}")
                break
            for b in range(n):
                histories[b].extend(scale_histories[b])
                if verdicts[b][0] == "ok":
                    start = ("given" if init is not None else cfg.init) if sc.index == 1 else "upsampled"
                    status, message = check_progress(scale_histories[b], start, moved[b])
                    if status != "ok" and sc.count > 1:
                        message = f"scale {sc.index} of {sc.count} ({rgb.shape[-1]}x{rgb.shape[-2]}): {message}"
                    verdicts[b] = (status, message)
        seconds = time.perf_counter() - t_start
        final = self._finish(out, rgb)
        if tuple(final.shape[-2:]) != tuple(full[0].shape[-2:]):   # cancelled before the last scale
            final = scales.upsample(final, full[0].shape[-2], full[0].shape[-1]).cpu()
        results = []
        for b in range(n):
            status, message = verdicts[b]
            image = final[b] if status in ("ok", "cancelled") else None
            if status == "diverged" and good is not None and b in good:
                it, scale_index, xb = good[b]
                xb = xb[None].detach().float().clamp(0, 1).cpu()
                if tuple(xb.shape[-2:]) != tuple(rgb.shape[-2:]):
                    xb = scales.upsample(xb, rgb.shape[-2], rgb.shape[-1])
                image = self._finish(xb, rgb[b:b + 1])[0]
                at = f"iteration {it}" + (f" of scale {scale_index}" if sc.count > 1 else "")
                message += f"; returning the last iterate with a finite loss ({at})"
            results.append(StyleResult(image, histories[b], seconds, self.backend.name, status, message,
                                           precision=self.config.precision))
        return results

    # -- pieces of run_batch -------------------------------------------------------------------
    @property
    def _luminance(self) -> bool:
        return self.config.original_colors == "luminance"

    def _keep(self, i: int) -> bool:
        return self.config.save_every > 0 and i > 0 and i % self.config.save_every == 0

    def _styles_for(self, contents: List[torch.Tensor], styles):
        """The per-image style lists run_batch passes to prepare(): ``styles`` as given, except
        under ``original_colors="luminance"``, where every image gets its styles (its own or
        the shared ones) as luminance matched to its content (so targets are per image)."""
        if not self._luminance:
            return styles
        if styles is None:
            shared = self.targets.styles
            if shared is None:
                raise ConfigError("no style images set: pass styles to run() or call set_styles()")
            per = [shared for _ in contents]
        else:
            per = [[imgs.to_tensor(s, f"styles[{i}][{j}]") for j, s in enumerate(group)]
                   for i, group in enumerate(styles)]
        return [[colors.matched_luminance(s, c) for s in group] for group, c in zip(per, contents)]

    def _finish(self, x: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """Images as handed out: clamped to [0, 1], with the content's chroma (``rgb``) under
        ``original_colors``."""
        if self.config.original_colors == "off":
            return x.clamp(0, 1)
        return colors.with_content_chroma(x, rgb.to(x.device))

    def _reporter(self, sc: "scales.Scale", rgb: torch.Tensor, names: List[str],
                  histories: List[List[Progress]], diverged: set, callback: Optional[ProgressCallback],
                  good: Optional[dict] = None, cancel: Optional[dict] = None):
        """The report function of one scale's optimisation: Progress per image to the
        histories and the callback; with ``good`` (last_finite), each image's last iterate
        with a finite loss is kept there. A callback returning False fills ``cancel`` and the
        report returns True, which stops the optimisation loop."""
        cfg = self.config
        n = len(names)
        height, width = int(rgb.shape[-2]), int(rgb.shape[-1])

        def report(i: int, ev: Evaluation, ms: float, x: Optional[torch.Tensor], stopped: bool = False) -> Optional[bool]:
            c, s, t = ev.content.tolist(), ev.style.tolist(), ev.tv.tolist()
            px = ev.pixel_term.tolist() if ev.pixel_term is not None else [0.0] * n
            finite = [math.isfinite(c[b] + s[b] + t[b] + px[b]) for b in range(n)]
            # the first non-finite loss of an image is always reported (it is the verdict)
            newly = {b for b in range(n) if b not in diverged and not finite[b]}
            diverged.update(newly)
            if good is not None and x is not None:
                for b in range(n):
                    if finite[b] and b not in diverged:
                        good[b] = (i, sc.index, x[b] if x.shape[0] == 1 else x[b].clone())
            final = stopped or i == sc.iters        # stopped: --tol ended this scale at i
            snapshot = x is not None and (self._keep(i) or final)
            if i % cfg.print_every != 0 and not final and not snapshot and not newly:
                return None
            snaps = self._finish(x, rgb).cpu() if snapshot else None
            for b in range(n):
                snap = snaps[b] if snaps is not None else None
                p = Progress(names[b], i, sc.iters, c[b] + s[b] + t[b] + px[b], c[b], s[b], t[b], ms, snap,
                             sc.index, sc.count, width, height, stopped, px[b])
                # the history keeps no snapshots: at 4K with --save-every they would add up to GBs
                histories[b].append(dataclasses.replace(p, snapshot=None) if snap is not None else p)
                if callback is not None and callback(p) is False and cancel is not None and not cancel:
                    cancel.update(iter=i, scale=sc.index)
            return True if cancel else None

        return report

    @_one_call_at_a_time
    def stylize(self, content: imgs.ImageLike, styles: Optional[Sequence[imgs.ImageLike]] = None,
                callback: Optional[ProgressCallback] = None, *, last_finite: bool = False):
        """Like :meth:`run`, returning just the image in the content's type (PIL, numpy or
        tensor); a diverged or stalled run raises (``last_finite``: see :meth:`run`)."""
        result = self.run(content, styles, callback, last_finite=last_finite)
        return _like(content, result.image)


def _like(original, image: torch.Tensor):
    if isinstance(original, Image.Image):
        return imgs.tensor_to_pil(image)
    if isinstance(original, np.ndarray):
        a = image.permute(1, 2, 0).numpy()
        return (a * 255.0 + 0.5).astype(np.uint8) if original.dtype == np.uint8 else a.astype(np.float32)
    if isinstance(original, torch.Tensor):
        return image if original.ndim == 3 else image[None]
    return imgs.tensor_to_pil(image)


def stylize(content: imgs.ImageLike, style: Union[imgs.ImageLike, Sequence[imgs.ImageLike]],
            callback: Optional[ProgressCallback] = None, *, last_finite: bool = False, **overrides):
    """One-call API: ``stylize(photo, painting, size=256, iters=200)``.

    ``style`` is one image or a list; options are :class:`StyleConfig` fields. A run that
    diverges raises :class:`~stylegrad.errors.DivergedError` (``last_finite=True``: returns
    the last iterate whose loss was finite instead), one that stalls
    :class:`~stylegrad.errors.StalledError`; a NaN or unchanged image is never returned.
    """
    config = StyleConfig().replace(**overrides)
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    s = Stylizer(config)
    try:
        return s.stylize(content, styles, callback, last_finite=last_finite)
    finally:
        s.close()
