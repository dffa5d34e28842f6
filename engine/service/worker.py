"""One worker thread per device: claims batches of compatible queued jobs from the store and
runs them through the engine (:meth:`Stylizer.run_batch`, which gives each image the result it
would get alone), then writes each result atomically and marks its job done.

Compatible jobs (equal ``batch_key``: the same settings, output size and styles) run as one
batch. Stylizers are kept per settings (sharing the loaded VGG), and the style targets of their
current styles are cached per size by the engine's ``TargetBuilder``, so a style used again
(a registered style, or the same painting) does not recompute its Gram matrices.

Cancelling a job stops its batch at the next iteration (the engine's callback protocol); the
cancelled job is marked ``cancelled`` and the other jobs of its batch go back to the queue
(they run again from the start). Stopping the server does the same with every job it holds.
"""
from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Dict, List, Optional

from stylegrad.errors import StyleGradError, error_text
from stylegrad.io import images as imgs
from stylegrad.run import scales
from stylegrad.run.stylizer import Progress, Stylizer

if TYPE_CHECKING:   # pragma: no cover
    from stylegrad.service.app import Service

STYLIZERS_KEPT = 4          # Stylizers (settings) kept per device
PROGRESS_WRITE_SECONDS = 1.0    # the store's iteration/loss are updated at most this often per job
SNAPSHOTS_KEPT = 256        # jobs whose latest snapshot is kept in memory
SNAPSHOTS = 8               # snapshots per run sent to the events stream (the page's live picture)


class DeviceWorker(threading.Thread):
    def __init__(self, service: "Service", device: str):
        super().__init__(name=f"stylegrad-worker-{device}", daemon=True)
        self.service = service
        self.device = device
        self.busy_seconds = 0.0
        self.started_at = time.time()
        self.current: List[str] = []
        self._stylizers: "OrderedDict[str, tuple]" = OrderedDict()   # key -> (Stylizer, style key)
        self.error: Optional[str] = None

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        svc = self.service
        while not svc.stopping.is_set():
            jobs = svc.store.claim(svc.settings.max_batch)
            if not jobs:
                svc.wake.wait(0.5)
                svc.wake.clear()
                continue
            t0 = time.time()
            self.current = [j["id"] for j in jobs]
            try:
                self.run_batch(jobs)
            except BaseException as e:   # never lose a job: say why it failed
                for j in jobs:
                    svc.store.finish(j["id"], "failed", error=f"internal error: {error_text(e)}")
            finally:
                self.current = []
                self.busy_seconds += time.time() - t0
                for j in jobs:
                    svc.live.pop(j["id"], None)
                    final = svc.store.get(j["id"])
                    if final is not None and final["status"] in ("done", "failed", "cancelled"):
                        svc.drop_inputs(final)   # requeued jobs keep theirs
        for st, _ in self._stylizers.values():
            st.close()

    def _stylizer(self, config) -> Stylizer:
        key = repr(config)
        if key in self._stylizers:
            self._stylizers.move_to_end(key)
            return self._stylizers[key][0]
        st = Stylizer(config, vgg=self.service.vgg)
        self._stylizers[key] = (st, None)
        while len(self._stylizers) > STYLIZERS_KEPT:
            old, _ = self._stylizers.popitem(last=False)[1]
            old.close()
        return st

    def run_batch(self, jobs: List[dict]) -> None:
        svc = self.service
        first = jobs[0]
        try:
            config = svc.job_config(first).replace(device=self.device)
            total = sum(sc.iters + 1 for sc in scales.plan(config))
            config = config.replace(save_every=max(1, config.iters // SNAPSHOTS), print_every=1)
            stylizer = self._stylizer(config)
            key = first["style_key"]
            if self._stylizers[repr(config)][1] != key:
                stylizer.set_styles(svc.style_tensors(first))
                self._stylizers[repr(config)] = (stylizer, key)
            contents = [imgs.load_image(svc.input_path(j["content"])) for j in jobs]
        except StyleGradError as e:
            for j in jobs:
                svc.store.finish(j["id"], "failed", error=str(e))
            return
        ids = [j["id"] for j in jobs]
        now = time.time()
        for j in jobs:
            svc.live[j["id"]] = {"iteration": 0, "iters": total, "loss": None, "started": now, "snapshot": 0,
                                 "done": 0}
        last_write: Dict[str, float] = {}
        stop_reason: Dict[str, str] = {}

        def callback(p: Progress):
            live = svc.live.get(p.image)
            if live is not None:
                live["done"] += 1
                live["iteration"] = live["done"] - 1
                live["loss"] = p.loss
                svc.metrics.iterations.inc(1.0 / len(ids))
                if p.snapshot is not None:
                    buf = io.BytesIO()
                    imgs.tensor_to_pil(p.snapshot).save(buf, format="PNG")
                    svc.snapshots[p.image] = buf.getvalue()
                    while len(svc.snapshots) > SNAPSHOTS_KEPT:    # the latest jobs' only
                        svc.snapshots.pop(next(iter(svc.snapshots)), None)
                    live["snapshot"] += 1
                t = time.time()
                if t - last_write.get(p.image, 0.0) >= PROGRESS_WRITE_SECONDS:
                    last_write[p.image] = t
                    svc.store.progress(p.image, live["iteration"], total, p.loss)
            t = time.time()
            if svc.stopping.is_set():
                stop_reason.setdefault("*", "stopping")
                return False
            wanted = [i for i in ids if i in svc.cancelled]   # DELETE adds ids (another thread)
            if wanted:
                for i in wanted:
                    stop_reason[i] = "cancel"
                return False
            return None

        try:
            results = stylizer.run_batch(contents, callback=callback, names=ids)
        except StyleGradError as e:
            for j in jobs:
                svc.store.finish(j["id"], "failed", error=str(e))
            return
        for j, result in zip(jobs, results):
            jid = j["id"]
            if result.status == "cancelled":
                if stop_reason.get(jid) == "cancel":
                    svc.store.finish(jid, "cancelled", error=result.message, loss=result.final_loss)
                    svc.cancelled.discard(jid)
                else:   # stopped for another job of its batch, or the server is stopping: run again
                    svc.store.requeue(jid)
                continue
            if result.status != "ok":
                svc.store.finish(jid, "failed", error=result.message, loss=result.final_loss)
                continue
            name = f"{jid}.png"
            try:
                imgs.save_image(result.image, svc.result_path(name))   # atomic, before done
            except StyleGradError as e:
                svc.store.finish(jid, "failed", error=str(e))
                continue
            svc.store.finish(jid, "done", result=name, loss=result.final_loss, iteration=total - 1)
        svc.wake.set()
