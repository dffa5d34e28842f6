"""``stylegrad serve --ray ADDRESS``: the same queue, dispatched to a Ray cluster through the
job executor (:class:`~stylegrad.jobs.ray_pool.RayPool`, bytes mode: inputs, styles and
results travel through Ray's object store, so the nodes need no shared filesystem).

One dispatcher thread claims batches of compatible jobs from the store as the local workers
do and hands each batch to the pool as one task. The pool's actors hold a Stylizer built for
one set of settings and styles; a batch with other settings or styles replaces them (their
weights load again), so the cluster is best used with a steady mix. Results come back encoded
and are written atomically before the job is marked done.

Limits of this mode: no per-iteration progress or snapshots (a job goes queued -> running ->
done), and cancelling a running job takes effect when its batch returns (its result is then
discarded). Stopping the server kills the actors; their jobs go back to the queue.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, List, Optional

from stylegrad.errors import error_text
from stylegrad.io.fileio import atomic_write
from stylegrad.jobs.ray_pool import RayPool, import_ray
from stylegrad.jobs.work import Item, JobSpec, Task

if TYPE_CHECKING:   # pragma: no cover
    from stylegrad.service.app import Service


class RayWorker(threading.Thread):
    def __init__(self, service: "Service", address: str, device_type: str = "cpu"):
        super().__init__(name="stylegrad-ray-dispatcher", daemon=True)
        self.service = service
        self.address = address
        self.device_type = device_type
        self.device = f"ray:{address}"      # the metrics' label
        self.busy_seconds = 0.0
        self.started_at = time.time()
        self._pool: Optional[RayPool] = None
        self._pool_key = None
        self._owns_ray = False
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Join (or start, for ``local``) the Ray cluster; raises StyleGradError."""
        from stylegrad.errors import StyleGradError

        ray = import_ray()
        if not ray.is_initialized():
            addr = None if self.address == "auto" else self.address
            try:
                ray.init(address=addr, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise StyleGradError(f"cannot connect to Ray at {self.address}: {e}") from None
            self._owns_ray = True

    def abort(self) -> None:
        """Kill the actors (server stopping): a batch in flight fails and goes back to the queue."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()

    def run(self) -> None:
        svc = self.service
        try:
            while not svc.stopping.is_set():
                jobs = svc.store.claim(svc.settings.max_batch)
                if not jobs:
                    svc.wake.wait(0.5)
                    svc.wake.clear()
                    continue
                t0 = time.time()
                try:
                    self.run_batch(jobs)
                except BaseException as e:
                    for j in jobs:
                        if svc.stopping.is_set():
                            svc.store.requeue(j["id"])
                        else:
                            svc.store.finish(j["id"], "failed", error=f"Ray: {error_text(e)}")
                finally:
                    self.busy_seconds += time.time() - t0
                    for j in jobs:
                        final = svc.store.get(j["id"])
                        if final is not None and final["status"] in ("done", "failed", "cancelled"):
                            svc.drop_inputs(final)
        finally:
            self.abort()
            if self._owns_ray:
                import_ray().shutdown()

    def _pool_for(self, jobs: List[dict]) -> RayPool:
        svc = self.service
        first = jobs[0]
        config = svc.job_config(first).replace(device="cpu")
        key = (repr(config), first["style_key"])
        with self._lock:
            if self._pool is not None and self._pool_key == key:
                return self._pool
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            names = json.loads(first["styles"])
            paths = [svc.style_file(n) for n in names]
            spec = JobSpec(config, tuple(p.name for p in paths), cpu_threads=1, ship_bytes=True,
                           style_bytes=tuple(p.read_bytes() for p in paths))
            pool = RayPool(self.address, self.device_type, ship_bytes=True, start_timeout=300.0)
            pool.start(spec, lambda msg: None)
            self._pool, self._pool_key = pool, key
            return pool

    def run_batch(self, jobs: List[dict]) -> None:
        svc = self.service
        pool = self._pool_for(jobs)
        items = tuple(Item(k, str(svc.input_path(j["content"])), j["id"], str(svc.result_path(f"{j['id']}.png")))
                      for k, j in enumerate(jobs))
        by_index = {k: j for k, j in enumerate(jobs)}
        for _, outcomes in pool.run([Task(0, items)], None, lambda msg: None):
            for o in outcomes:
                job = by_index[o["index"]]
                jid = job["id"]
                if jid in svc.cancelled:
                    svc.cancelled.discard(jid)
                    svc.store.finish(jid, "cancelled", error="cancelled while its batch ran on Ray")
                elif o.get("status") == "ok":
                    data = o["output_bytes"]
                    atomic_write(svc.result_path(f"{jid}.png"), lambda f: f.write(data))
                    svc.store.finish(jid, "done", result=f"{jid}.png", loss=o.get("loss"))
                elif svc.stopping.is_set():
                    svc.store.requeue(jid)
                else:
                    svc.store.finish(jid, "failed", error=o.get("error") or "failed on Ray")
        svc.wake.set()
