"""Worker processes on one host: one per device (``cuda:0,cuda:1``) or N on the CPU.

Each worker is a ``spawn``-ed process holding one :class:`~stylegrad.jobs.work.JobWorker` (one
Stylizer) for the whole job. The driver keeps the queue of planned tasks and hands the next one
to whichever worker is idle, over that worker's own pipe, so it always knows which task a worker
holds. A worker that dies (its pipe closes or its process ends) is started again on the same
device and its task is retried once; a task whose worker dies twice becomes ``error`` records.
Workers die with the driver (``PR_SET_PDEATHSIG`` on Linux, and end of pipe otherwise), and
ignore Ctrl-C, which the driver handles by stopping them. A worker told to stop (SIGTERM, as
:meth:`LocalPool.close` does to a busy one) exits through its ``finally`` blocks: the output it
was writing keeps no temporary and its lock is released and removed; exit code 143.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from multiprocessing.connection import wait
from typing import Callable, Dict, List, Optional, Sequence

from stylegrad.errors import StyleGradError, error_text
from stylegrad.jobs.work import JobSpec, JobWorker, Task, error_outcome


class WorkerError(StyleGradError):
    """A worker could not start, or workers keep dying."""


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:   # not Linux: the closed pipe ends the worker after its current task
        pass
    if os.getppid() != parent:      # the driver died before prctl took effect
        os._exit(1)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(143)       # not an Exception: no per-image handler takes it; finally blocks run


def worker_main(conn, device: str, spec: JobSpec, threads: Optional[int], parent: int,
                before_task: Optional[Callable[[Task], None]] = None) -> None:
    """A worker process: build the Stylizer, then compute tasks until told to stop."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        worker = JobWorker(spec, device, threads)
    except BaseException as e:
        conn.send(("fatal", error_text(e)))
        return
    conn.send(("ready", os.getpid()))
    sink = (lambda ev: conn.send(("progress", ev))) if spec.relay_progress else None
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                break
            if task is None:
                break
            if before_task is not None:
                before_task(task)
            conn.send(("done", task.id, worker.run_task(task, sink)))
    finally:
        worker.close()


class _Slot:
    def __init__(self, index: int, device: str):
        self.index, self.device = index, device
        self.proc = None
        self.conn = None
        self.pid: Optional[int] = None
        self.ready = False
        self.task: Optional[Task] = None


class LocalPool:
    """Executor: one worker process per entry of ``devices`` (repeat ``cpu`` for N CPU workers).

    CPU workers use the job's ``cpu_threads``; ``gpu_worker_threads`` sets torch's threads in
    GPU workers (host-side work; default: torch's own).
    """

    def __init__(self, devices: Sequence[str], gpu_worker_threads: Optional[int] = None, retries: int = 1,
                 max_restarts: Optional[int] = None, before_task: Optional[Callable[[Task], None]] = None):
        if not devices:
            raise StyleGradError("a worker pool needs at least one device")
        self.devices = list(devices)
        kinds = {d.split(":")[0] for d in self.devices}
        if len(kinds) != 1:
            raise StyleGradError("a worker pool runs on one kind of device (CPU and GPU round differently)")
        self.device_type = kinds.pop()
        self.workers = len(self.devices)
        self.threads = gpu_worker_threads
        self.retries = retries
        self.max_restarts = max_restarts if max_restarts is not None else 2 * len(self.devices) + 2
        self.before_task = before_task
        uniq = list(dict.fromkeys(self.devices))
        self.description = f"{len(self.devices)} worker process(es) on {', '.join(uniq)}"
        self.restarts = 0
        self._slots: List[_Slot] = []
        self._spec: Optional[JobSpec] = None
        self._ctx = mp.get_context("spawn")   # CUDA and torch's thread pools do not survive fork

    # -- processes -----------------------------------------------------------------------------
    def _spawn(self, slot: _Slot) -> None:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, name=f"stylegrad-worker-{slot.index}",
                                 args=(theirs, slot.device, self._spec, self.threads, os.getpid(), self.before_task),
                                 daemon=True)
        proc.start()
        theirs.close()
        slot.proc, slot.conn, slot.ready, slot.pid, slot.task = proc, ours, False, None, None

    def start(self, spec: JobSpec, note: Callable[[str], None], n_tasks: Optional[int] = None) -> None:
        self._spec = spec
        devices = self.devices[:max(1, n_tasks)] if n_tasks is not None else self.devices
        self.workers = len(devices)
        self.description = f"{len(devices)} worker process(es) on {', '.join(dict.fromkeys(devices))}"
        self._slots = [_Slot(i, d) for i, d in enumerate(devices)]
        for s in self._slots:
            self._spawn(s)
        while not all(s.ready for s in self._slots):
            for slot, msg in self._events(timeout=None):
                if msg is None:       # died while starting
                    raise WorkerError(f"a worker on {slot.device} died while starting (exit code {slot.proc.exitcode})")
                self._handle_start_message(slot, msg)

    def _handle_start_message(self, slot: _Slot, msg) -> None:
        if msg[0] == "ready":
            slot.ready, slot.pid = True, msg[1]
        elif msg[0] == "fatal":
            raise WorkerError(f"a worker on {slot.device} could not start: {msg[1]}")

    def _events(self, timeout: Optional[float]):
        """(slot, message) pairs; message None when the slot's process died."""
        live = [s for s in self._slots if s.conn is not None]
        objs: Dict[object, _Slot] = {}
        for s in live:
            objs[s.conn] = s
            objs[s.proc.sentinel] = s
        out = []
        seen = set()
        for obj in wait(list(objs), timeout=timeout):
            s = objs[obj]
            if s.index in seen:
                continue
            seen.add(s.index)
            closed = False
            try:
                while s.conn.poll():
                    out.append((s, s.conn.recv()))
            except (EOFError, OSError):
                closed = True          # its end of the pipe is gone: it has exited or is exiting
            if closed or not s.proc.is_alive() or obj is s.proc.sentinel:
                s.proc.join(timeout=5)
                if s.proc.exitcode is None:      # a closed pipe but a live process: end it
                    s.proc.kill()
                    s.proc.join()
                out.append((s, None))
        return out

    # -- running -------------------------------------------------------------------------------
    def run(self, tasks: Sequence[Task], on_progress, note):
        pending = deque(tasks)
        attempts: Dict[int, int] = {}
        while pending or any(s.task is not None for s in self._slots):
            for s in self._slots:
                if s.ready and s.task is None and pending:
                    s.task = pending.popleft()
                    try:
                        s.conn.send(s.task)
                    except (BrokenPipeError, OSError):
                        pass          # its death shows up as an event below
            for slot, msg in self._events(timeout=5.0):
                if msg is None:
                    yield from self._died(slot, pending, attempts, note)
                elif msg[0] == "done":
                    task, slot.task = slot.task, None
                    if task is not None:
                        yield task, msg[2]
                elif msg[0] == "progress":
                    if on_progress is not None:
                        on_progress(msg[1])
                else:
                    self._handle_start_message(slot, msg)

    def _died(self, slot: _Slot, pending, attempts, note):
        code = slot.proc.exitcode
        task, slot.task = slot.task, None
        slot.conn.close()
        slot.conn = None
        what = f"worker on {slot.device} (pid {slot.pid}) died (exit code {code})"
        if task is not None:
            attempts[task.id] = attempts.get(task.id, 0) + 1
            names = ", ".join(task.names)
            if attempts[task.id] <= self.retries:
                note(f"{what} while computing {names}; retrying it")
                pending.appendleft(task)
            else:
                note(f"{what} again while computing {names}; recorded as failed")
                msg = f"its worker died {attempts[task.id]} times while computing it (last exit code {code})"
                yield task, [error_outcome(it, msg, slot.device) for it in task.items if it.write]
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise WorkerError(f"workers died {self.restarts} times; giving up (the last: {what})")
        if pending or any(s.task is not None for s in self._slots):
            self._spawn(slot)
        else:
            slot.proc = None

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, busy ones (an interrupted job) are
        terminated at once."""
        for s in self._slots:
            if s.proc is not None and s.task is not None:
                s.proc.terminate()
            elif s.conn is not None:
                try:
                    s.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for s in self._slots:
            if s.proc is not None:
                s.proc.join(timeout=10)
                if s.proc.is_alive():
                    s.proc.terminate()
                    s.proc.join(timeout=5)
                if s.proc.is_alive():
                    s.proc.kill()
                    s.proc.join()
            if s.conn is not None:
                s.conn.close()
                s.conn = None
        self._slots = []
