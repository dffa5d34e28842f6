"""A job on a Ray cluster: one actor per GPU (``num_gpus=1``) or per CPU slot.

Each actor holds one :class:`~stylegrad.jobs.work.JobWorker` (a Stylizer, and with it compiled
kernels and graphs) for the whole job; tasks are the driver's planned batches. Results come
back to the driver, which alone writes the manifest. Faults use Ray's own machinery: an actor
that dies is restarted (``max_restarts``) and the task it held is retried once
(``max_task_retries``); a task whose actor dies again becomes ``error`` records, and the job
goes on with the actors that remain.

Files: by default inputs, styles and outputs are paths on a filesystem every node mounts at
the same place (the driver sends absolute paths; actors read inputs and write outputs).
``ship_bytes`` instead sends each input's bytes through Ray's object store and gets the encoded
output back, for nodes without a shared filesystem (the driver writes the outputs).

Ray is imported only here, only when a Ray job is asked for (``pip install 'stylegrad[ray]'``).
"""
from __future__ import annotations

import logging
import os
import socket
from collections import deque
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

from stylegrad.errors import StyleGradError, error_text
from stylegrad.jobs.local_pool import WorkerError
from stylegrad.jobs.work import JobSpec, JobWorker, Task, error_outcome


def import_ray():
    try:
        import ray
    except ImportError:
        raise StyleGradError("--ray needs Ray: pip install 'stylegrad[ray]'") from None
    return ray


class StyleActor:
    """The body of a Ray actor (``ray.remote`` is applied when the pool starts)."""

    def __init__(self, spec: JobSpec, device_type: str):
        if device_type == "cuda":
            import ray
            ids = ray.get_gpu_ids()
            self.label = f"cuda:{ids[0]}" if ids else "cuda"
            device = "cuda:0"          # Ray makes the actor's GPU the only visible one
        else:
            self.label, device = "cpu", "cpu"
        self.worker = JobWorker(spec, device)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": self.label}

    def run_task(self, task: Task) -> List[dict]:
        outcomes = self.worker.run_task(task)
        for o in outcomes:
            o["device"] = self.label
        return outcomes


class RayPool:
    """Executor on a Ray cluster.

    ``address``: ``auto`` (Ray's own lookup: ``RAY_ADDRESS``, then a cluster started with
    ``ray start`` on this machine, else a new local one), ``local`` (always a new local one),
    or a cluster address (``HOST:PORT``, ``ray://HOST:PORT``). A Ray already initialised in
    this process is used as it is.
    """

    def __init__(self, address: str = "auto", device_type: str = "cpu", max_actors: Optional[int] = None,
                 ship_bytes: bool = False, max_restarts: int = 3, max_task_retries: int = 1, start_timeout: float = 900.0):
        self.address = address
        self.device_type = device_type
        self.max_actors = max_actors
        self.ship_bytes = ship_bytes
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.start_timeout = start_timeout
        self.workers = 0
        self.description = f"Ray ({address})"
        self.actors: list = []
        self.actor_info: List[dict] = []          # per actor at start: pid, host, device
        self.inflight: Dict[object, tuple] = {}   # object ref -> (task, actor, early outcomes)
        self._owns_ray = False
        self._ray = None

    def start(self, spec: JobSpec, note, n_tasks: Optional[int] = None) -> None:
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            addr = None if self.address == "auto" else self.address
            if addr not in (None, "local"):
                _check_reachable(addr)
            handler = _sigterm_handler()
            try:
                ray.init(address=addr, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise StyleGradError(f"cannot connect to Ray at {self.address}: {error_text(e)}") from None
            finally:
                _restore_sigterm(handler)   # ray.init installs its own (exit 15, a C++ stack dump)
            self._owns_ray = True
        res = ray.cluster_resources()
        if self.device_type == "cuda":
            n = int(res.get("GPU", 0))
            if n == 0:
                raise StyleGradError("the Ray cluster has no GPU: use --device cpu for CPU actors")
            opts = {"num_gpus": 1, "num_cpus": 1}
        else:   # one actor per CPU slot: a slot is the job's threads per image
            threads = max(1, spec.cpu_threads or 1)
            n = int(res.get("CPU", 0) // threads)
            if n == 0:
                raise StyleGradError(f"the Ray cluster has {res.get('CPU', 0)} CPU(s), fewer than --threads {threads}")
            opts = {"num_cpus": threads}
        if self.max_actors:
            n = min(n, self.max_actors)
        if n_tasks is not None:
            n = max(1, min(n, n_tasks))
        actor_cls = ray.remote(StyleActor).options(max_restarts=self.max_restarts,
                                                   max_task_retries=self.max_task_retries, **opts)
        self.actors = [actor_cls.remote(spec, self.device_type) for _ in range(n)]
        try:
            with _signals_through():
                self.actor_info = ray.get([a.ready.remote() for a in self.actors], timeout=self.start_timeout)
        except ray.exceptions.GetTimeoutError:
            raise WorkerError(f"Ray did not place {n} actor(s) within {self.start_timeout:.0f} s "
                              f"(are the cluster's {'GPUs' if self.device_type == 'cuda' else 'CPUs'} busy?)") from None
        except ray.exceptions.RayError as e:
            raise WorkerError(f"a Ray actor could not start: {_cause(e)}") from None
        self.workers = n
        hosts = sorted({i["host"] for i in self.actor_info})
        self.description = f"Ray ({self.address}): {n} actor(s) on {len(hosts)} host(s)"
        note(f"ray: {n} actor(s) ({self.device_type}) on {', '.join(hosts)}")

    def _prepare(self, task: Task):
        """With ship_bytes: read each input here; one that cannot be read fails here alone."""
        if not self.ship_bytes:
            return task, []
        items, errors = [], []
        for it in task.items:
            try:
                items.append(replace(it, data=Path(it.input).read_bytes()))
            except OSError as e:
                if it.write:
                    errors.append(error_outcome(it, f"cannot read {it.name}: {e.strerror or e}"))
        return Task(task.id, tuple(items)), errors

    def run(self, tasks, on_progress, note):
        ray = self._ray
        pending = deque(tasks)
        idle = list(self.actors)
        inflight = self.inflight
        while pending or inflight:
            while idle and pending:
                actor, task = idle.pop(0), pending.popleft()
                sent, early = self._prepare(task)
                if not sent.items:
                    idle.append(actor)
                    yield task, early
                    continue
                inflight[actor.run_task.remote(sent)] = (task, actor, early)
            if not inflight:
                continue
            with _signals_through():
                ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                task, actor, early = inflight.pop(ref)
                try:
                    with _signals_through():
                        outcomes = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    note(f"ray: an actor died twice while computing {', '.join(task.names)}; recorded as failed")
                    outcomes = [error_outcome(it, f"its Ray actor died while computing it, also on the retry: {_cause(e)}")
                                for it in task.items if it.write]
                    if self._alive(actor):
                        idle.append(actor)
                    else:
                        note("ray: that actor is gone for good (no restarts left)")
                except ray.exceptions.RayError as e:
                    outcomes = [error_outcome(it, _cause(e)) for it in task.items if it.write]
                    idle.append(actor)
                else:
                    idle.append(actor)
                yield task, early + outcomes
            if pending and not idle and not inflight:
                raise WorkerError(f"every Ray actor died; {len(pending)} batch(es) not attempted "
                                  f"(run again with --resume)")

    def _alive(self, actor) -> bool:
        ray = self._ray
        try:
            ray.get(actor.ready.remote(), timeout=self.start_timeout)
            return True
        except ray.exceptions.RayError:
            return False

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False
        _wait_gone([i.get("pid") for i in self.actor_info if i.get("host") == socket.gethostname()])


def _wait_gone(pids, timeout: float = 10.0) -> None:
    """Wait (a while) for killed actors of this host to be gone, so that the job can clear what
    they left (``stylegrad.io.fileio.remove_debris`` removes only a dead process's files)."""
    import time
    from stylegrad.io.fileio import process_alive

    deadline = time.time() + timeout
    for pid in pids:
        while isinstance(pid, int) and process_alive(pid) and time.time() < deadline:
            time.sleep(0.05)


@contextmanager
def _signals_through():
    """Ctrl-C or SIGTERM (the driver's handler raises) arriving inside Ray's compiled calls comes
    out as ``SystemError: ... returned a result with an exception set``: give back the signal's
    own exception, so that the job stops as it does elsewhere (exit 130 / 143)."""
    from stylegrad.errors import Terminated
    try:
        yield
    except SystemError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, (KeyboardInterrupt, Terminated)):
            raise cause from None
        raise


def _sigterm_handler():
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.getsignal(signal.SIGTERM)


def _restore_sigterm(handler) -> None:
    """Put back the SIGTERM handler the driver had (the CLI's: stop the job, exit 143)."""
    import signal
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Ray waits minutes for a cluster it cannot reach: try the TCP port first."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise StyleGradError(f"--ray {address}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise StyleGradError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}") from None


def _cause(e: BaseException) -> str:
    text = str(e).strip()
    # Ray's messages are long; keep the first line that says something
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "ray::")):
            return line[:300]
    return type(e).__name__
