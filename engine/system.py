"""What this machine offers a run: the CPU cores this process may use and the memory available
now. Imports nothing of stylegrad, so every layer (the kernels' emulator included) may use it."""
from __future__ import annotations

import os
from typing import Optional

import torch


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, so a container's or
    ``taskset``'s limit counts), else every core; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):      # no affinity call here (macOS, Windows)
        return os.cpu_count() or 1


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> Optional[int]:
    """Room left under a cgroup v2 memory limit (containers), or None without one."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((l.strip().split(":", 2)[2] for l in f if l.startswith("0::")), None)
        if path is None:
            return None
        base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(base, "memory.current")) as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError, StopIteration):
        return None


def available_bytes(device: Optional[torch.device] = None) -> Optional[int]:
    """Memory a run on ``device`` can use now: free GPU memory (plus what torch's caching
    allocator holds unused) for CUDA; for the CPU the kernel's MemAvailable, or the room left
    under a cgroup limit when that is smaller. None when it cannot be told."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    values = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(values) if values else None
