"""A job from start to end on the driver: plan, check the folder's manifest, skip what is done
(``resume``), hand tasks to an executor, and write one manifest record per finished image.

The plan is the same whatever runs it (one process, worker processes, Ray actors): the inputs in
the given order, grouped by size after resizing and cut into ``batch_size`` chunks. Batched
arithmetic rounds differently from unbatched (an image alone and the same image next to a batch
partner differ in the last bits), so fixing which images go together is part of what makes every
way of running a job give the same bytes. Only the driver writes the manifest.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import torch

from stylegrad import __version__
from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError, ImageError, NoSpaceError, StyleGradError
from stylegrad.io import images as imgs
from stylegrad.io.fileio import atomic_write, file_sha256, make_folders, remove_created_folders, remove_debris
from stylegrad.jobs import stats
from stylegrad.jobs.manifest import JobManifestError, ManifestWriter, is_locked, load_state, manifest_path, now
from stylegrad.jobs.settings import differing, pixel_settings, settings_hash, styles_digest
from stylegrad.jobs.work import Item, JobSpec, JobWorker, Task, error_outcome
from stylegrad.system import usable_cores


class JobSettingsChanged(ConfigError):
    """The folder's job was run with settings that give other pixels."""


class JobExistsError(ConfigError):
    """The folder holds a job and neither ``resume`` nor ``fresh`` was asked for."""


class JobListener:
    """What a job reports while it runs (the CLI prints it; the default ignores it)."""

    def note(self, message: str) -> None: ...

    def planned(self, total: int, todo: int, skipped: int) -> None: ...

    def progress(self, event: dict) -> None: ...

    def record(self, record: dict, outcome: dict) -> None: ...


class Executor(Protocol):
    description: str
    workers: int
    device_type: str                     # "cpu" | "cuda": part of the pixel settings

    def start(self, spec: JobSpec, note: Callable[[str], None], n_tasks: int) -> None:
        """Build the workers (no more than ``n_tasks``); raise if they cannot start."""

    def run(self, tasks: Sequence[Task], on_progress: Optional[Callable[[dict], None]],
            note: Callable[[str], None]) -> Iterator[Tuple[Task, List[dict]]]: ...

    def close(self) -> None: ...


@dataclass
class JobRequest:
    job_dir: Path
    contents: List[Path]                 # inputs, in order
    outputs: List[Path]                  # one per input, inside job_dir
    config: StyleConfig
    styles: List[str]
    cpu_threads: Optional[int] = 1       # torch threads per image on the CPU (a pixel setting)
    pair_styles: bool = False
    resume: bool = False
    force: bool = False
    fresh: bool = False                  # start the folder's job over (its manifest is emptied)
    ship_bytes: bool = False
    relay_progress: bool = False
    command: Optional[List[str]] = None  # the command line that ran it (job status: how to resume)


@dataclass
class JobSummary:
    job_dir: str
    run: str
    total: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0
    images_per_hour: Optional[float] = None
    seconds_per_image: Dict[str, Optional[float]] = field(default_factory=dict)
    executor: str = ""
    workers: int = 0
    interrupted: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# -- planning ----------------------------------------------------------------------------------

def planned_shape(path: Path, size: int, resize_filter: str = "lanczos") -> Optional[Tuple[int, int]]:
    """(H, W) after resizing, from the file's header (no decode); None if unreadable. Only used
    to group a batch; the worker regroups by the decoded size if a header misleads."""
    try:
        h, w = imgs.image_size(path)
    except Exception:
        return None
    return imgs.scaled_size(h, w, size, resize_filter)


def plan_batches(contents: Sequence[Path], size: int, batch_size: int,
                 resize_filter: str = "lanczos") -> List[List[int]]:
    """Indices per batch, the one batching rule (jobs, and the memory check before a run):
    grouped by output size in order of first appearance, then chunks of batch_size; an
    unreadable header is a batch of its own."""
    if batch_size <= 1:
        return [[i] for i in range(len(contents))]
    groups: Dict[object, List[int]] = {}
    for i, c in enumerate(contents):
        shape = planned_shape(c, size, resize_filter)
        groups.setdefault(shape if shape is not None else ("unreadable", i), []).append(i)
    return [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]


def _hash_all(paths: Sequence[Path]) -> Dict[Path, Optional[str]]:
    """SHA-256 of many files, several at a time (hashlib releases the GIL); None if unreadable."""
    def one(p):
        try:
            return file_sha256(p)
        except OSError:
            return None
    uniq = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=min(8, 2 * usable_cores())) as pool:
        return dict(zip(uniq, pool.map(one, uniq)))


# -- running -----------------------------------------------------------------------------------

def run_job(req: JobRequest, executor: Executor, listener: Optional[JobListener] = None) -> JobSummary:
    """Run (or resume) the job in ``req.job_dir`` with ``executor``; return its summary.

    Raises :class:`JobExistsError` when the folder holds a job and neither ``resume`` nor
    ``fresh`` is set, :class:`JobSettingsChanged` when the folder's last run used other pixel
    settings and ``force`` is not set, :class:`~stylegrad.jobs.manifest.JobManifestError` when
    its manifest holds lines that are not this job's, :class:`~stylegrad.jobs.manifest.JobFolderBusy`
    when another process runs a job there, :class:`~stylegrad.errors.NoSpaceError` when the disk
    fills up (the manifest keeps every record written whole; ``resume`` continues). An image
    that fails is an ``error`` record, never an exception. A folder created here is removed
    again when the run is refused before it records anything.
    """
    listener = listener or JobListener()
    job_dir = Path(req.job_dir)
    created = make_folders(job_dir)
    try:
        return _run_job(req, executor, listener, job_dir)
    except BaseException:
        remove_created_folders(created)     # only folders left empty: a refused run leaves nothing
        raise


def _run_job(req: JobRequest, executor: Executor, listener: JobListener, job_dir: Path) -> JobSummary:
    device_type = executor.device_type
    cpu_threads = req.cpu_threads if device_type == "cpu" else None
    settings = pixel_settings(req.config, device_type, cpu_threads)
    chash = settings_hash(settings)
    try:
        style_hashes = [file_sha256(s) for s in req.styles]
    except OSError as e:
        raise ImageError(f"cannot read style image {e.filename}: {e.strerror}") from None
    shared_styles = styles_digest(style_hashes)
    inputs = [os.path.abspath(c) for c in req.contents]
    outputs = [os.path.abspath(o) for o in req.outputs]
    out_names = [os.path.relpath(o, os.path.abspath(job_dir)) for o in outputs]
    if req.pair_styles and len(req.styles) != len(inputs):
        raise ConfigError(f"pair_styles needs one style per input: {len(req.styles)} for {len(inputs)}")
    if req.resume and req.fresh:
        raise ConfigError("--resume continues the folder's job, --fresh starts it over: give one")
    item_styles = [styles_digest([style_hashes[i]]) if req.pair_styles else shared_styles for i in range(len(inputs))]

    with ManifestWriter(job_dir, fresh=req.fresh) as manifest:
        state = load_state(job_dir)
        if state.unreadable:
            n = state.unreadable[0]
            more = f" (and {len(state.unreadable) - 1} more)" if len(state.unreadable) > 1 else ""
            raise JobManifestError(f"{manifest.path} line {n}: {state.reasons.get(n, 'unreadable')}{more}; "
                                   f"--fresh to start the job over, or move the folder away")
        last = state.last_run
        if last is not None and not req.resume:
            n_done = len(_done_inputs(req, state, inputs, outputs, out_names, item_styles, chash, JobListener()))
            raise JobExistsError(f"{job_dir} already holds a job: {n_done} of {len(inputs)} images done; "
                                 f"--resume to continue, --fresh to start over")
        if last is not None and last.get("settings") != settings and not req.force:
            diff = differing(last.get("settings") or {}, settings)
            raise JobSettingsChanged(f"the job in {job_dir} was run with other settings: {', '.join(diff)}; "
                                     f"pass --force to run it with these (its images are then redone)")

        done = _done_inputs(req, state, inputs, outputs, out_names, item_styles, chash, listener) if req.resume else set()
        batches = plan_batches(req.contents, req.config.size, req.config.batch_size, req.config.resize_filter)
        tasks: List[Task] = []
        for b in batches:
            if all(i in done for i in b):
                continue
            tasks.append(Task(len(tasks), tuple(
                Item(i, inputs[i], str(req.contents[i]), outputs[i], i if req.pair_styles else None, write=i not in done)
                for i in b)))
        todo = sum(1 for t in tasks for it in t.items if it.write)
        run_id = uuid.uuid4().hex[:12]
        summary = JobSummary(str(job_dir), run_id, total=len(inputs), skipped=len(done))
        t0 = time.time()
        run_record = {"kind": "run", "run": run_id, "started": round(t0, 3), "settings": settings,
                      "config_hash": chash, "inputs": inputs, "outputs": out_names,
                      "styles": [os.path.abspath(s) for s in req.styles], "styles_sha256": style_hashes,
                      "pair_styles": req.pair_styles, "resume": req.resume, "force": req.force, "fresh": req.fresh,
                      "host": socket.gethostname(), "pid": os.getpid(), "stylegrad": __version__,
                      "torch": torch.__version__}
        if req.command:
            run_record.update(command=list(req.command), cwd=os.getcwd())
        listener.planned(len(inputs), todo, len(done))
        spec = JobSpec(req.config, tuple(str(s) for s in req.styles), req.pair_styles, cpu_threads, req.ship_bytes,
                       tuple(Path(s).read_bytes() for s in req.styles) if req.ship_bytes else None,
                       req.relay_progress)
        records: List[dict] = []
        header_written = False
        failing = False
        try:
            if tasks:
                executor.start(spec, listener.note, len(tasks))
                summary.startup_seconds = round(time.time() - t0, 3)
                summary.executor, summary.workers = executor.description, executor.workers
            # written once the workers are up, so that it names them; "started" is before startup
            manifest.append({**run_record, "executor": executor.description, "workers": executor.workers})
            header_written = True
            if tasks:
                for task, outcomes in executor.run(tasks, listener.progress if req.relay_progress else None,
                                                   listener.note):
                    by_index = {o["index"]: o for o in outcomes}
                    no_space = None
                    for item in task.items:
                        if not item.write:
                            continue
                        o = by_index.get(item.index) or error_outcome(item, "the worker returned no result for this image")
                        o = _write_shipped_output(o)
                        if o.get("no_space"):       # not the image's fault: not recorded, the job stops
                            no_space = no_space or o["error"]
                            continue
                        rec = _record(o, run_id, chash, item_styles[item.index], out_names[item.index])
                        manifest.append(rec)
                        records.append(rec)
                        if rec["status"] == "ok":
                            summary.ok += 1
                        else:
                            summary.failed += 1
                        listener.record(rec, o)
                    if no_space is not None:
                        raise NoSpaceError(no_space)
        except NoSpaceError as e:            # the job stops; every record written is whole
            failing = True
            summary.interrupted = True
            raise NoSpaceError(f"{e}; free some space, then run again with --resume") from None
        except BaseException:
            failing = True
            summary.interrupted = True
            raise
        finally:
            try:
                executor.close()
            finally:
                remove_debris([it.output for t in tasks for it in t.items if it.write])   # of killed workers
                summary.wall_seconds = round(time.time() - t0, 3)
                summary.images_per_hour = stats.images_per_hour(summary.ok, summary.wall_seconds)
                summary.seconds_per_image = stats.seconds_percentiles(records)
                if header_written:
                    try:
                        manifest.append({"kind": "end", "run": run_id, "finished": now(), "ok": summary.ok,
                                         "failed": summary.failed, "skipped": summary.skipped,
                                         "interrupted": summary.interrupted, "wall_seconds": summary.wall_seconds,
                                         "images_per_hour": summary.images_per_hour})
                    except NoSpaceError:
                        if not failing:      # otherwise the error in flight says it already
                            raise
    return summary


def _done_inputs(req, state, inputs, outputs, out_names, item_styles, chash, listener) -> set:
    """Indices whose latest ok record matches: same settings, input, styles, and the output
    still on disk with the recorded hash."""
    candidates = []
    redo = {"settings": 0, "styles": 0, "input": 0, "output": 0}
    for i, inp in enumerate(inputs):
        rec = state.latest_ok.get(inp)
        if rec is None:
            continue
        if rec.get("config_hash") != chash:
            redo["settings"] += 1
        elif rec.get("styles_sha256") != item_styles[i]:
            redo["styles"] += 1
        elif rec.get("output") != out_names[i]:
            redo["output"] += 1
        else:
            candidates.append((i, rec))
    hashes = _hash_all([Path(inputs[i]) for i, _ in candidates] + [Path(outputs[i]) for i, _ in candidates])
    done = set()
    for i, rec in candidates:
        if hashes.get(Path(inputs[i])) != rec.get("input_sha256"):
            redo["input"] += 1
        elif hashes.get(Path(outputs[i])) != rec.get("output_sha256"):
            redo["output"] += 1
        else:
            done.add(i)
    why = {"settings": "the settings changed (--force)", "styles": "their style changed",
           "input": "their input changed", "output": "their output is missing or changed"}
    for k, n in redo.items():
        if n:
            listener.note(f"resume: {n} image(s) done before are redone: {why[k]}")
    return done


def _write_shipped_output(o: dict) -> dict:
    """Bytes mode: the driver writes the output the actor sent back (atomically, under the
    output's lock, as every output is written)."""
    from stylegrad.errors import OutputLockedError
    from stylegrad.io.fileio import output_lock

    data = o.pop("output_bytes", None)
    if data is None or o.get("status") != "ok":
        return o
    try:
        with output_lock(o["output"]):
            atomic_write(o["output"], lambda f: f.write(data), size_hint=len(data))
    except NoSpaceError as e:
        return {**o, "status": "error", "error": str(e), "no_space": True}
    except (OSError, OutputLockedError) as e:
        msg = str(e) if isinstance(e, OutputLockedError) else f"cannot write {o['output']}: {e.strerror or e}"
        return {**o, "status": "error", "error": msg}
    return o


_RECORD_KEYS = ("input", "input_sha256", "output_sha256", "status", "error", "seconds", "batch",
                "backend", "device", "host")


def _record(o: dict, run_id: str, chash: str, styles_sha: str, out_name: str) -> dict:
    rec = {"kind": "image", "run": run_id, "config_hash": chash, "styles_sha256": styles_sha, "output": out_name}
    for k in _RECORD_KEYS:
        if k in o:
            rec[k] = o[k]
    rec["finished"] = now()
    return {k: rec[k] for k in ("kind", "input", "input_sha256", "styles_sha256", "config_hash", "output",
                                "output_sha256", "status", "error", "seconds", "batch", "backend", "device", "host",
                                "finished", "run") if k in rec}


# -- executors ---------------------------------------------------------------------------------

class InlineExecutor:
    """One process, one device: the driver computes every task itself (torch's thread count is
    set for the job as the spec says, and restored after)."""

    workers = 1

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.device_type = torch.device(device).type
        self.description = f"one process on {device}"
        self._worker: Optional[JobWorker] = None
        self._saved_threads: Optional[int] = None
        self.weights_are_random = False

    def start(self, spec: JobSpec, note: Callable[[str], None], n_tasks: int = 1) -> None:
        self._saved_threads = torch.get_num_threads()
        self._worker = JobWorker(spec, self.device)
        self.weights_are_random = self._worker.weights_are_random

    def run(self, tasks, on_progress, note):
        for task in tasks:
            yield task, self._worker.run_task(task, on_progress)

    def close(self) -> None:
        try:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
        finally:
            if self._saved_threads is not None:
                torch.set_num_threads(self._saved_threads)
                self._saved_threads = None


def resume_command(run: dict) -> Optional[str]:
    """The command line that continues a run (its own, ``--fresh`` dropped, ``--resume``
    added), preceded by ``cd`` into its folder when that is not the current one; None when
    the run did not record its command (the Python API)."""
    import shlex

    cmd = run.get("command")
    if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd) or not cmd:
        return None
    args = [a for a in cmd if a not in ("--fresh", "--resume")] + ["--resume"]
    line = shlex.join(args)
    cwd = run.get("cwd")
    if isinstance(cwd, str) and os.path.abspath(cwd) != os.getcwd():
        line = f"cd {shlex.quote(cwd)} && {line}"
    return line


def job_status(job_dir, verify: bool = False) -> dict:
    """Where a job folder stands: done, failed (with reasons), remaining, images/hour so far.

    Counted against the inputs and settings of the folder's last run. ``verify`` re-hashes each
    done image's output (otherwise only its existence is checked). ``running``: a process holds
    the folder's lock now; ``interrupted``: none does, and the last run stopped (or was killed)
    before its images were done; ``resume_command`` then says how to continue. The rate and the
    time left (``images_per_hour_now``, ``seconds_left``) are given only while a run is going
    and from images it finished, never guessed.
    """
    job_dir = Path(job_dir)
    if job_dir.exists() and not job_dir.is_dir():
        raise StyleGradError(f"{job_dir} is not a folder: give the job folder (the --out-dir of the run)")
    manifest = manifest_path(job_dir)
    state = load_state(job_dir)
    last = state.last_run
    if last is None:
        if manifest.is_file():
            raise StyleGradError(f"{manifest} has no readable run record ({len(state.unreadable)} unreadable "
                                 "line(s)): damaged, or not a stylegrad job manifest")
        raise StyleGradError(f"no stylegrad job in {job_dir} (no {manifest})")
    chash = last.get("config_hash")
    inputs = list(last.get("inputs") or [])
    outputs = dict(zip(inputs, last.get("outputs") or []))
    done, failed, missing = [], [], []
    for inp in inputs:
        rec = state.latest.get(inp)
        if rec is None or rec.get("config_hash") != chash:
            missing.append(inp)
            continue
        if rec.get("status") == "ok":
            out = job_dir / rec.get("output", outputs.get(inp, ""))
            ok = out.is_file() and (not verify or file_sha256(out) == rec.get("output_sha256"))
            (done if ok else missing).append(inp)
        else:
            failed.append({"input": inp, "error": rec.get("error", "")})
    ok_records = [r for r in state.images if r.get("status") == "ok"]
    wall = stats.run_wall_seconds(state.runs, state.images, state.ends)
    running = is_locked(job_dir)
    end = state.ends.get(str(last.get("run")))
    interrupted = not running and bool(missing) and (end is None or bool(end.get("interrupted")))
    rate_now = seconds_left = None
    if running:      # measured: the images this run finished, over the time it took them
        mine = [r for r in state.images if r.get("run") == last.get("run") and r.get("status") == "ok"
                and isinstance(r.get("finished"), (int, float))]
        started = last.get("started")
        if mine and isinstance(started, (int, float)):
            span = max(r["finished"] for r in mine) - started
            if span > 0:
                rate_now = round(len(mine) * 3600.0 / span, 2)
                seconds_left = round(len(missing) * span / len(mine), 1)
    # a video job (stylegrad video) counts frames; its frames run one after another, so after an
    # interruption the time left is the frames left at the measured median seconds per frame
    unit = "frames" if last.get("video") else "images"
    per = stats.seconds_percentiles(ok_records)
    if seconds_left is None and unit == "frames" and missing and per.get("p50") is not None:
        seconds_left = round(len(missing) * per["p50"], 1)
    return {"job_dir": str(job_dir), "unit": unit, "inputs": len(inputs), "done": len(done), "failed": failed,
            "remaining": len(missing), "runs": len(state.runs), "wall_seconds": round(wall, 3),
            "images_per_hour": stats.images_per_hour(len(ok_records), wall),
            "seconds_per_image": stats.seconds_percentiles(ok_records),
            "config_hash": chash, "running": running, "pid": last.get("pid") if running else None,
            "interrupted": interrupted, "resume_command": resume_command(last) if interrupted else None,
            "images_per_hour_now": rate_now, "seconds_left": seconds_left,
            "unreadable_lines": list(state.unreadable)}
