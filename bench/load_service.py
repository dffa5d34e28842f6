"""Load test of ``stylegrad serve``: N concurrent clients (default 64) each submit small jobs
(random VGG weights, tiny sizes, random options) to a server started here on 127.0.0.1, wait
for them and fetch the results. Records throughput, p50/p99 latency (submit -> result fetched),
the server's peak memory (VmHWM) and how many accepted jobs were lost (not done with a
readable result), in bench/results/service-load.json.

    python bench/load_service.py [--clients 64] [--jobs-per-client 2] [--time-limit 600]

Loopback only; bounded in count (clients x jobs) and time (--time-limit).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def picture(seed: int, w: int, h: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values, q):
    return float(np.percentile(np.array(values), q)) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--jobs-per-client", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=600.0, help="give up after this many seconds")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "service-load.json"))
    args = ap.parse_args()

    import httpx

    from stylegrad.service.client import Client

    data = Path(tempfile.mkdtemp(prefix="stylegrad-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    n_jobs = args.clients * args.jobs_per_client
    cmd = [sys.executable, "-m", "stylegrad.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data", str(data), "--weights", "random", "--model", "vgg16", "--max-batch", str(args.max_batch),
           "--rate", "1000", "--max-jobs-per-token", str(n_jobs)]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() - t0 > 120:
            print("server did not start", server.stderr.read() if server.poll() is not None else "", file=sys.stderr)
            server.kill()
            return 1
        time.sleep(0.2)
    startup = time.monotonic() - t0

    styles = [picture(100 + k, 40, 40) for k in range(2)]
    lock = threading.Lock()
    latencies, accepted, done, failed, errors = [], [], [], [], []
    deadline = time.monotonic() + args.time_limit

    def client_main(k: int) -> None:
        rng = random.Random(k)
        with Client(url, timeout=60, retries=10) as c:
            for j in range(args.jobs_per_client):
                # 2 sizes x 2 iteration counts x 2 paintings: compatible jobs meet in the queue
                opts = {"size": rng.choice((24, 32)), "iters": rng.choice((5, 10))}
                start = time.monotonic()
                try:
                    job = c.submit(picture(1000 * k + j, 32, 24), styles[rng.randrange(2)], **opts)
                    with lock:
                        accepted.append(job.id)
                    info = c.wait(job.id, max(1.0, deadline - time.monotonic()), poll=0.2)
                    if info["status"] == "done":
                        Image.open(io.BytesIO(c.result_bytes(job.id))).load()
                        with lock:
                            done.append(job.id)
                            latencies.append(time.monotonic() - start)
                    else:
                        with lock:
                            failed.append((job.id, info["status"], info.get("error")))
                except Exception as e:   # counted and reported, never hidden
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")

    t_run = time.monotonic()
    threads = [threading.Thread(target=client_main, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    wall = time.monotonic() - t_run
    peak = peak_rss(server.pid)
    server.send_signal(signal.SIGTERM)
    rc = server.wait(60)

    import sqlite3

    db = sqlite3.connect(str(data / "jobs.sqlite"))
    batches = {str(b): n for b, n in db.execute("SELECT batch, COUNT(*) FROM jobs WHERE status='done' GROUP BY batch")}
    exactly_once = all(n == 1 for (n,) in db.execute("SELECT done_count FROM jobs WHERE status='done'"))
    db.close()
    lost = [i for i in accepted if i not in set(done) and i not in {f[0] for f in failed}]
    result = {
        "what": "bench/load_service.py: concurrent clients against stylegrad serve on 127.0.0.1",
        "command": " ".join(["python", "bench/load_service.py"] + sys.argv[1:]),
        "clients": args.clients, "jobs_per_client": args.jobs_per_client, "jobs_planned": n_jobs,
        "accepted": len(accepted), "done": len(done), "failed": len(failed), "lost": len(lost),
        "every_done_job_done_once": exactly_once,
        "client_errors": len(errors), "client_error_examples": errors[:3], "failed_examples": failed[:3],
        "wall_seconds": round(wall, 2), "jobs_per_second": round(len(done) / wall, 3) if wall else None,
        "latency_p50_seconds": round(percentile(latencies, 50), 3) if latencies else None,
        "latency_p99_seconds": round(percentile(latencies, 99), 3) if latencies else None,
        "server_peak_rss_bytes": peak, "server_startup_seconds": round(startup, 2), "server_exit_code": rc,
        "done_in_batches_of": batches,
        "settings": {"weights": "random", "model": "vgg16", "devices": "cpu", "max_batch": args.max_batch,
                     "sizes": [24, 32], "iters": [5, 10], "styles": 2},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "note": "shared 2-core development machine (other work running at the same time): "
                            "numbers are indicative only"},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from stylegrad.io.fileio import write_json_atomic

    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0 if not lost and not errors and len(done) == n_jobs else 1


if __name__ == "__main__":
    sys.exit(main())
