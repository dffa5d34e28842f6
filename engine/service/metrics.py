"""Prometheus metrics of the service (prometheus-client, one registry per service)."""
from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:   # pragma: no cover
    from stylegrad.service.app import Service


class ServiceMetrics:
    def __init__(self, service: "Service"):
        self.service = service
        self.started = time.time()
        r = self.registry = CollectorRegistry()
        self.queue_depth = Gauge("stylegrad_queue_depth", "jobs queued", registry=r)
        self.running = Gauge("stylegrad_jobs_running", "jobs running", registry=r)
        self.jobs = Gauge("stylegrad_jobs", "jobs in the store by status", ["status"], registry=r)
        self.iterations = Counter("stylegrad_iterations", "optimisation iterations run (per image)", registry=r)
        self.images_per_hour = Gauge("stylegrad_images_per_hour", "jobs done per hour since the server started",
                                     registry=r)
        self.busy = Gauge("stylegrad_device_busy_fraction", "fraction of the time since start a device was busy",
                          ["device"], registry=r)
        self.memory = Gauge("stylegrad_device_memory_bytes", "memory in use: peak RSS of the process for cpu, "
                            "allocated CUDA memory for cuda devices", ["device"], registry=r)
        self._done_at_start = service.store.counts()["done"]   # images/hour counts this server's work

    def render(self):
        svc = self.service
        counts = svc.store.counts()
        for status, n in counts.items():
            self.jobs.labels(status).set(n)
        self.queue_depth.set(counts["queued"])
        self.running.set(counts["running"])
        hours = max(1e-9, (time.time() - self.started) / 3600)
        self.images_per_hour.set((counts["done"] - self._done_at_start) / hours)
        for w in svc.workers:
            span = max(1e-9, time.time() - w.started_at)
            self.busy.labels(w.device).set(min(1.0, w.busy_seconds / span))
            self.memory.labels(w.device).set(_memory(w.device))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _memory(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.memory_allocated(torch.device(device)))
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
