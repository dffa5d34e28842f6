"""``stylegrad serve --ray``: the queue's batches run on a (local) Ray cluster through the job
executor and give the bytes a local worker gives."""
from __future__ import annotations

import logging
import shutil
import tempfile

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
ray = pytest.importorskip("ray", reason="ray is not installed (test extra)")

from stylegrad import StyleConfig  # noqa: E402
from stylegrad.service import Limits, ServiceSettings  # noqa: E402
from stylegrad.service.client import Client  # noqa: E402

from .helpers import ENGINE, LiveServer, write_png  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    if ray.is_initialized():
        yield
        return
    tmp = tempfile.mkdtemp(prefix="sgray", dir="/tmp")      # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def _run(url, c, s, opts):
    with Client(url) as client:
        jobs = [client.submit(x, s, **o) for x, o in zip(c, opts)]
        infos = [client.wait(j.id, 240) for j in jobs]
        assert [i["status"] for i in infos] == ["done"] * len(jobs), infos
        return [client.result_bytes(j.id) for j in jobs]


@pytest.mark.slow      # ~50 s on 2 cores: a local Ray cluster and its actors start
def test_ray_server_gives_the_local_workers_bytes(ray_cluster, tmp_path):
    import torch

    contents = [write_png(tmp_path / f"c{k}.png", k) for k in range(3)]
    style = write_png(tmp_path / "s.png", 9, 40, 40)
    opts = [dict(size=24, iters=5), dict(size=24, iters=5), dict(size=32, iters=4)]
    base = dict(config=StyleConfig(**ENGINE), limits=Limits(max_size=64))
    with LiveServer(ServiceSettings(data=tmp_path / "ray", ray="auto", **base)) as srv:
        assert srv.service.workers[0].device == "ray:auto"
        on_ray = _run(srv.url, contents, style, opts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # the actors' threads (a pixel setting on the CPU)
    try:
        with LiveServer(ServiceSettings(data=tmp_path / "local", **base)) as srv:
            local = _run(srv.url, contents, style, opts)
    finally:
        torch.set_num_threads(threads)
    assert on_ray == local
    assert ray.is_initialized()           # a Ray the server did not start is left running
