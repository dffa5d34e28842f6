"""Shared pieces of the service tests: tiny images, a live server on a free loopback port."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

# random weights, a small network: the tests are about plumbing (what a user sees on trained
# weights is the engine's tests' business)
ENGINE = dict(weights="random", model="vgg16")


def png_bytes(seed: int, w: int = 32, h: int = 24) -> bytes:
    a = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path, seed: int, w: int = 32, h: int = 24) -> Path:
    Path(path).write_bytes(png_bytes(seed, w, h))
    return Path(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app served by uvicorn in a thread of this process, on 127.0.0.1 only."""

    def __init__(self, settings):
        import uvicorn

        from stylegrad.service import create_app

        self.app = create_app(settings)
        self.service = self.app.state.service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.service.begin_stop()
        self.server.should_exit = True
        self.thread.join(30)


def start_process(data, *extra, env=None) -> subprocess.Popen:
    """``stylegrad serve`` as a subprocess on a free loopback port; returns it once /readyz is ok
    (``proc.url`` is its address)."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "stylegrad.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data", str(data), "--weights", "random", "--model", "vgg16", *extra]
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, text=True)
    proc.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(proc.url + "/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server not ready after 90 s")
        time.sleep(0.2)


def stop_process(proc, sig=signal.SIGKILL, timeout=30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
