"""The unit of work of a job and the one code path that computes it.

A :class:`Task` is a batch planned by the driver: images of one size, optimised together
(``--batch-size``). A :class:`JobWorker` holds one :class:`~stylegrad.Stylizer` for a whole job
and turns tasks into outcomes (one dict per image: hashes, status, timing). The same
``JobWorker.run_task`` runs in the driver's process, in a local worker process and in a Ray
actor, so every way of running a job computes the same bytes (given the same CPU threads per
image on the CPU; see :mod:`stylegrad.jobs.settings`). :func:`optimise_and_write` is the one
path from content tensors to written images (snapshots, the not-written rule, the write), for
job workers and ``stylegrad stylize -o`` alike.

Library code: raises or returns, never prints.
"""
from __future__ import annotations

import hashlib
import socket
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from stylegrad.config import StyleConfig
from stylegrad.errors import NoSpaceError, OutputLockedError, StyleGradError, UnsafeFileError, error_text
from stylegrad.io import images as imgs
from stylegrad.io.fileio import file_sha256, output_lock
from stylegrad.run.stylizer import Progress, Stylizer

ProgressSink = Callable[[dict], None]


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to build its Stylizer (picklable; sent once per worker)."""

    config: StyleConfig                       # ``device`` is replaced per worker
    styles: Tuple[str, ...]                   # style image paths (the shared blend, or one per image)
    pair_styles: bool = False                 # each item names its style by index into ``styles``
    cpu_threads: Optional[int] = None         # torch threads per image on the CPU (a pixel setting;
                                              # the worker applies it, whoever runs the worker)
    ship_bytes: bool = False                  # no shared filesystem: inputs, styles and outputs travel as bytes
    style_bytes: Optional[Tuple[bytes, ...]] = None   # with ship_bytes: the styles' file contents
    relay_progress: bool = False              # send per-iteration progress back to the driver


@dataclass(frozen=True)
class Item:
    index: int                                # position in the job's input list
    input: str                                # absolute path
    name: str                                 # the input as the user gave it (progress and messages)
    output: str                               # absolute path
    style: Optional[int] = None               # with pair_styles: index into JobSpec.styles
    write: bool = True                        # False: computed for its batch partners only (resume)
    data: Optional[bytes] = field(default=None, repr=False, compare=False)   # shipped input bytes


@dataclass(frozen=True)
class Task:
    id: int
    items: Tuple[Item, ...]

    @property
    def names(self) -> List[str]:
        return [it.name for it in self.items]


def snapshot_path(out: Path, it: int, scale: int = 1, scales: int = 1) -> Path:
    """``--save-every``: ``OUT_stem.iterNNNN.ext`` next to the output; with several scales
    (``--min-size``) ``OUT_stem.scaleK.iterNNNN.ext``."""
    tag = f".scale{scale}" if scales > 1 else ""
    return out.with_name(f"{out.stem}{tag}.iter{it:04d}{out.suffix}")


def is_output_iterate(p: Progress) -> bool:
    """Whether this iterate is the output itself: the last scale's last iterate, or where
    ``--tol`` stopped it. It is written as the output, never also as a snapshot."""
    return p.scale == p.scales and (p.iter == p.iters or p.stopped)


def write_snapshot(p: Progress, out: Path, config: StyleConfig) -> Optional[str]:
    """``--save-every``, for ``-o`` runs and jobs alike: write ``p``'s snapshot of output ``out``
    when it carries one and is not the output itself. Returns a warning line when it could not
    be written (never raises: a lost snapshot must not lose the run), else None."""
    if p.snapshot is None or config.save_every <= 0 or is_output_iterate(p):
        return None
    try:
        imgs.save_image(p.snapshot, snapshot_path(Path(out), p.iter, p.scale, p.scales))
    except Exception as e:
        return f"snapshot {p.iter} not written: {error_text(e)}"
    return None


def not_written_reason(result) -> Optional[str]:
    """Why a run's image is not written (diverged, stalled or cancelled: the run says why), or
    None when it is ok to write."""
    return None if result.status == "ok" else f"{result.message}; nothing written"


@dataclass
class Written:
    """One image of :func:`optimise_and_write`: its run and what became of its output."""

    name: str
    result: object                        # the Stylizer's RunResult
    status: str = "ok"                    # "ok" (written, or not asked to be), "error", "cancelled"
    error: str = ""                       # one line, when nothing was written
    no_space: bool = False                # the disk, not the image: a job stops
    extra: dict = field(default_factory=dict)   # what the writer reported (hashes, bytes)


def save_output(image: torch.Tensor, out: Path) -> dict:
    """The default writer of :func:`optimise_and_write`: the image file at ``out``."""
    imgs.save_image(image, out)
    return {}


def optimise_and_write(stylizer: Stylizer, tensors: Sequence[torch.Tensor], names: Sequence[str],
                       outputs: Sequence[Optional[Path]], config: StyleConfig, *,
                       on_progress: Optional[Callable[[Progress], Optional[bool]]] = None,
                       on_warning: Optional[Callable[[str, str], None]] = None,
                       styles=None, write: Callable[[torch.Tensor, Path], dict] = save_output) -> List[Written]:
    """The one path from resized content tensors to written images, for ``-o`` runs and job
    workers alike: optimise them as one batch, write the ``--save-every`` snapshots
    (:func:`write_snapshot`) and then each output whose run may be written
    (:func:`not_written_reason`) with ``write`` (image, output) -> what to report. An output of
    None is computed for its batch partners and not written. ``on_progress`` sees every
    iteration after its snapshot (returning False cancels the batch); ``on_warning(name, line)``
    hears of lost snapshots. One :class:`Written` per image, in order; raises only when the
    whole batch fails."""
    by_name = dict(zip(names, outputs))

    def callback(p: Progress) -> Optional[bool]:
        out = by_name.get(p.image)
        if out is not None:
            warning = write_snapshot(p, out, config)
            if warning and on_warning is not None:
                on_warning(p.image, warning)
        return on_progress(p) if on_progress is not None else None

    results = stylizer.run_batch(list(tensors), callback=callback, names=list(names), styles=styles)
    done: List[Written] = []
    for name, out, result in zip(names, outputs, results):
        w = Written(name, result)
        reason = not_written_reason(result)
        if reason is not None:
            w.status, w.error = ("cancelled" if result.status == "cancelled" else "error"), reason
        elif out is not None:
            try:
                w.extra = write(result.image, out)
            except NoSpaceError as e:   # the disk, not the image
                w.status, w.error, w.no_space = "error", str(e), True
            except Exception as e:      # one image failing to write must not lose the others
                w.status, w.error = "error", error_text(e)
        done.append(w)
    return done


def planned_snapshots(out: Path, config: StyleConfig) -> List[Path]:
    """Every ``--save-every`` snapshot a run of ``config`` writes for output ``out``, in order:
    every ``save_every`` iterations of each scale and each scale's last iterate, except the
    output itself (the last scale's last iterate)."""
    if config.save_every <= 0:
        return []
    from stylegrad.run import scales

    plan = scales.plan(config)
    out_paths = []
    for sc in plan:
        its = list(range(config.save_every, sc.iters + 1, config.save_every))
        if sc.iters not in its:
            its.append(sc.iters)
        for it in its:
            if sc.index == len(plan) and it == sc.iters:
                continue
            out_paths.append(snapshot_path(Path(out), it, sc.index, len(plan)))
    return out_paths


def error_outcome(item: Item, message: str, device: str = "", backend: str = "") -> dict:
    return {"index": item.index, "input": item.input, "name": item.name, "output": item.output, "status": "error",
            "error": message, "device": device, "backend": backend, "host": socket.gethostname()}


class JobWorker:
    """One Stylizer for the whole job on one device.

    Torch threads: on the CPU, ``spec.cpu_threads`` (the job's rule; it changes the bits); on
    a GPU, ``threads`` if given (host-side work only; it does not change the bits).
    """

    def __init__(self, spec: JobSpec, device: str, threads: Optional[int] = None, *, vgg=None,
                 download_progress=None, on_iteration: Optional[Callable[[Progress], None]] = None,
                 style_images: Optional[Sequence[torch.Tensor]] = None):
        """``vgg``, ``download_progress``: as :class:`~stylegrad.Stylizer` takes them, and
        ``style_images``: ``spec.styles`` already read (a worker in the caller's own process:
        ``stylegrad stylize -o``, ``stylegrad neural-style``);
        ``on_iteration``: sees every iteration's Progress (in process only; ``run_task``'s
        ``on_progress`` sees every ``print_every``-th, as a dict that can cross processes)."""
        if torch.device(device).type == "cpu" and spec.cpu_threads:
            torch.set_num_threads(spec.cpu_threads)
        elif threads:
            torch.set_num_threads(threads)
        self.spec = spec
        self.device = device
        self.host = socket.gethostname()
        self._tmp = tempfile.TemporaryDirectory(prefix="stylegrad-job-") if spec.ship_bytes else None
        self.config = spec.config.replace(device=device)
        self.on_iteration = on_iteration
        self.stylizer = Stylizer(self.config, vgg=vgg, download_progress=download_progress)
        try:
            if spec.ship_bytes:
                self.styles = [self._decode(data, name) for data, name in zip(spec.style_bytes, spec.styles)]
            else:
                self.styles = (list(style_images) if style_images is not None
                               else [imgs.load_image(p) for p in spec.styles])
            if not spec.pair_styles:
                self.stylizer.set_styles(self.styles)
        except BaseException:
            self.close()
            raise

    @property
    def weights_are_random(self) -> bool:
        return self.stylizer.weights_are_random

    def close(self) -> None:
        self.stylizer.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- bytes without a shared filesystem: through a private temporary file, so that reading
    # and writing keep the one set of rules of stylegrad.io.images --------------------------------
    def _decode(self, data: bytes, name: str) -> torch.Tensor:
        tmp = Path(self._tmp.name) / Path(name).name
        tmp.write_bytes(data)
        try:
            return imgs.load_image(tmp)
        except StyleGradError as e:
            raise type(e)(str(e).replace(str(tmp), name)) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _encode(self, image: torch.Tensor, name: str) -> bytes:
        tmp = Path(self._tmp.name) / Path(name).name
        imgs.save_image(image, tmp)
        try:
            return tmp.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)

    # -- the work ------------------------------------------------------------------------------
    def run_task(self, task: Task, on_progress: Optional[ProgressSink] = None, lock_outputs: bool = True) -> List[dict]:
        """Compute a task; one outcome per item with ``write`` set. Never raises for an image.
        Each output is written under its advisory lock (``stylegrad.io.fileio.output_lock``, the
        rule ``-o`` follows too), held from before its input is read until it is written; an
        output another process holds is an error outcome, and its image is still computed for
        its batch partners. Shipped outputs are locked by the driver, which writes them, and
        ``lock_outputs=False`` says the caller holds the locks (``stylegrad stylize -o``)."""
        with ExitStack() as locks:
            outcomes: List[dict] = []
            items: List[Item] = []
            for item in task.items:
                if item.write and lock_outputs and not self.spec.ship_bytes:
                    try:
                        locks.enter_context(output_lock(item.output))
                    except (OutputLockedError, UnsafeFileError) as e:
                        outcomes.append(error_outcome(item, error_text(e), self.device))
                        item = replace(item, write=False)
                    except OSError as e:
                        outcomes.append(error_outcome(item, f"cannot lock {item.output}: {e.strerror or e}", self.device))
                        item = replace(item, write=False)
                items.append(item)
            return sorted(outcomes + self._compute(items, on_progress), key=lambda o: o["index"])

    def _compute(self, task_items: Sequence[Item], on_progress: Optional[ProgressSink]) -> List[dict]:
        outcomes: List[dict] = []
        loaded: List[Tuple[Item, torch.Tensor, str]] = []
        for item in task_items:
            try:
                if self.spec.ship_bytes:
                    if item.data is None:
                        raise StyleGradError(f"{item.name}: no bytes shipped for this input")
                    tensor = self._decode(item.data, item.name)
                    sha = hashlib.sha256(item.data).hexdigest()
                else:
                    tensor = imgs.load_image(item.input, self.config.max_memory)
                    sha = file_sha256(item.input)
                loaded.append((item, imgs.resize_longest(tensor, self.config.size, self.config.resize_filter), sha))
            except Exception as e:   # an unreadable image fails alone
                if item.write:
                    outcomes.append(error_outcome(item, error_text(e), self.device))
        # A batch needs one size: the driver planned it from the files' headers; regroup by the
        # decoded size in case a header misled it (order kept, so this is deterministic too).
        groups: Dict[tuple, list] = {}
        for entry in loaded:
            groups.setdefault(tuple(entry[1].shape), []).append(entry)
        for group in groups.values():
            outcomes.extend(self._run_group(group, on_progress))
        return outcomes

    def _run_group(self, group: Sequence[Tuple[Item, torch.Tensor, str]], on_progress) -> List[dict]:
        cfg = self.config
        items = [g[0] for g in group]
        warnings: Dict[str, List[str]] = {}

        def callback(p: Progress) -> Optional[bool]:
            if self.on_iteration is not None:
                self.on_iteration(p)
            if on_progress is not None and (p.iter % cfg.print_every == 0 or p.iter == p.iters or p.stopped):
                stop = on_progress({"image": p.image, "scale": p.scale, "scales": p.scales, "width": p.width,
                                    "height": p.height, "iter": p.iter, "iters": p.iters, "loss": p.loss,
                                    "content": p.content, "style": p.style, "tv": p.tv, "ms": round(p.ms, 3),
                                    "stopped": p.stopped})
                return False if stop is False else None   # on_progress returning False cancels the batch
            return None

        def write(image: torch.Tensor, out: Path) -> dict:
            if self.spec.ship_bytes:
                data = self._encode(image, str(out))
                return {"output_bytes": data, "output_sha256": hashlib.sha256(data).hexdigest()}
            imgs.save_image(image, out)
            return {"output_sha256": file_sha256(out)}

        styles = [[self.styles[it.style]] for it in items] if self.spec.pair_styles else None
        # shipped outputs: the driver writes the bytes; snapshots need a shared filesystem (refused up front)
        outputs = [Path(it.output) if it.write else None for it in items]
        try:
            written = optimise_and_write(self.stylizer, [g[1] for g in group], [it.name for it in items], outputs,
                                         cfg, on_progress=callback, styles=styles, write=write,
                                         on_warning=lambda name, line: warnings.setdefault(name, []).append(line))
        except Exception as e:   # the whole batch failed; the job goes on
            return [error_outcome(it, error_text(e), self.device, self.stylizer.backend_name)
                    for it in items if it.write]
        out = []
        for (item, _, in_sha), w in zip(group, written):
            if not item.write:
                continue
            result = w.result
            base = {"index": item.index, "input": item.input, "name": item.name, "output": item.output,
                    "input_sha256": in_sha,
                    "seconds": round(result.seconds, 3), "batch": len(items), "backend": result.backend,
                    "precision": result.precision,
                    "device": self.device, "host": self.host}
            if item.name in warnings:
                base["warnings"] = warnings[item.name]
            if w.status != "ok":   # cancelled on request (recorded as such), diverged, stalled, or not written
                out.append({**base, "status": w.status, "error": w.error, **({"no_space": True} if w.no_space else {})})
                continue
            out.append({**base, **w.extra, "status": "ok", "iters": cfg.iters, "scales": result.history[-1].scales,
                        "loss": result.final_loss,
                        "initial_loss": result.history[0].loss,
                        "last_scale_initial_loss": result.last_scale_initial_loss,
                        "width": int(result.image.shape[-1]), "height": int(result.image.shape[-2])})
        return out
