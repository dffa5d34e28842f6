"""Jobs on a local Ray cluster (num_cpus=2, one CPU actor per slot): the bytes of one process,
an actor killed mid-job, and --resume after the driver stopped halfway. Ray comes from the
``test`` extra, so these run in CI."""
import logging
import os
import shutil
import signal
import tempfile

import pytest
import ray

from stylegrad import StyleConfig
from stylegrad.cli.main import main
from stylegrad.jobs import JobListener, JobRequest, run_job
from stylegrad.jobs.manifest import ManifestWriter, load_state
from stylegrad.jobs.ray_pool import RayPool
from stylegrad.jobs.runner import InlineExecutor
from tests.helpers import write_image
from tests.test_jobs import FAST, _by_input, _image_records, _images, _outputs


@pytest.fixture(scope="module")
def ray_cluster():
    tmp = tempfile.mkdtemp(prefix="sgray", dir="/tmp")      # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_ray_job_gives_the_bytes_and_records_of_one_process(ray_cluster, tmp_path):
    """Paths on a shared filesystem, and bytes through the object store: both the same bytes."""
    _images(tmp_path / "in", [(20, 14), (14, 20), (20, 14), (20, 14)])
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    base = ["stylize", str(tmp_path / "in"), "--style", str(s), "--size", "18", "--iters", "4",
            "--batch-size", "2", "--threads", "1"] + FAST
    assert main(base + ["--out-dir", str(tmp_path / "one")]) == 0
    assert main(base + ["--out-dir", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    assert main(base + ["--out-dir", str(tmp_path / "bytes"), "--ray", "auto", "--ray-bytes"]) == 0
    one = _outputs(tmp_path / "one")
    assert len(one) == 4 and _outputs(tmp_path / "ray") == one and _outputs(tmp_path / "bytes") == one
    ref = _by_input(_image_records(tmp_path / "one"))
    assert _by_input(_image_records(tmp_path / "ray")) == ref == _by_input(_image_records(tmp_path / "bytes"))
    assert ray.is_initialized()                  # a Ray the job did not start is left running


def test_an_actor_killed_mid_job_is_restarted_and_the_job_completes(ray_cluster, tmp_path):
    ins = _images(tmp_path / "in", [(24, 24)] * 6)
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    cfg = StyleConfig(size=24, iters=20, weights="random", print_every=100)

    def request(d):
        return JobRequest(tmp_path / d, ins, [tmp_path / d / p.name for p in ins], cfg, [str(s)])

    run_job(request("ref"), InlineExecutor("cpu"))
    pool = RayPool("auto", "cpu")
    killed = []

    class Killer(JobListener):
        def record(self, rec, o):
            busy = [a for _, a, _ in pool.inflight.values()]
            if not killed and busy:
                pid = pool.actor_info[pool.actors.index(busy[0])]["pid"]
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)         # a crash, as Ray sees it

    summary = run_job(request("ray"), pool, Killer())
    assert killed, "no actor was busy when the first image finished"
    assert summary.ok == 6 and summary.failed == 0
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "ref")


def test_resume_after_the_driver_stopped_halfway_redoes_only_the_missing(ray_cluster, tmp_path, monkeypatch):
    ins = _images(tmp_path / "in", [(16, 16)] * 6)
    s = write_image(tmp_path / "s.png", 16, 16, seed=9)
    out = tmp_path / "out"
    base = ["stylize", str(tmp_path / "in"), "--style", str(s), "--size", "16", "--iters", "6"] + FAST
    real_append = ManifestWriter.append
    seen = []

    def stop_after_two(self, rec):                   # the driver stops (Ctrl-C) after 2 images
        real_append(self, rec)
        if rec["kind"] == "image":
            seen.append(rec)
            if len(seen) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(ManifestWriter, "append", stop_after_two)
    assert main(base + ["--out-dir", str(out), "--ray", "auto"]) == 130
    monkeypatch.setattr(ManifestWriter, "append", real_append)
    first = {r["input"]: r["output_sha256"] for r in _image_records(out)}
    assert len(first) == 2
    assert main(base + ["--out-dir", str(out), "--ray", "auto", "--resume"]) == 0
    state = load_state(out)
    redone = {r["input"] for r in state.images if r["run"] == state.runs[-1]["run"]}
    assert redone == {str(p) for p in ins} - set(first)
    assert state.ends[state.runs[0]["run"]]["interrupted"] is True
    assert main(base + ["--out-dir", str(tmp_path / "one")]) == 0
    assert _outputs(out) == _outputs(tmp_path / "one")
