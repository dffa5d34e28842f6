"""Cancelling a run: a progress callback that returns False stops it at the next iteration; the
result says ``cancelled`` and carries the image so far; a job record says ``cancelled``."""
import torch

from stylegrad import StyleConfig, Stylizer
from stylegrad.jobs.work import Item, JobSpec, JobWorker, Task
from tests.helpers import write_image

CFG = dict(size=24, iters=30, weights="random", model="vgg16", style_layers="relu1_1,relu2_1",
           content_layers="relu2_1", optimizer="adam", lr=0.05)


def test_callback_false_stops_at_next_iteration_with_image_so_far(tmp_path):
    content = write_image(tmp_path / "c.png", 24, 20, seed=1)
    style = write_image(tmp_path / "s.png", 24, 24, seed=2)
    s = Stylizer(StyleConfig(**CFG))
    seen = []

    def stop_at_5(p):
        seen.append(p.iter)
        return False if p.iter == 5 else None

    result = s.run(content, [style], callback=stop_at_5)
    assert result.status == "cancelled"
    assert "iteration 5" in result.message
    assert seen == list(range(6))                          # nothing reported after the cancel
    assert result.history[-1].iter == 5
    assert result.image is not None and result.image.shape == (3, 20, 24)
    assert float(result.image.min()) >= 0 and float(result.image.max()) <= 1
    # the image so far is not the photo (5 updates were made) and not the full run's result
    full = s.run(content, [style])
    assert full.status == "ok"
    assert not torch.equal(result.image, full.image)
    s.close()


def test_callback_none_or_true_does_not_cancel(tmp_path):
    content = write_image(tmp_path / "c.png", 16, 16, seed=1)
    style = write_image(tmp_path / "s.png", 16, 16, seed=2)
    s = Stylizer(StyleConfig(**{**CFG, "size": 16, "iters": 4}))
    assert s.run(content, [style], callback=lambda p: True).status == "ok"
    assert s.run(content, [style], callback=lambda p: None).history[-1].iter == 4


def test_cancel_in_first_scale_returns_full_size_image(tmp_path):
    content = write_image(tmp_path / "c.png", 32, 24, seed=1)
    style = write_image(tmp_path / "s.png", 32, 32, seed=2)
    s = Stylizer(StyleConfig(**{**CFG, "size": 32, "min_size": 16, "iters": 6}))
    result = s.run(content, [style], callback=lambda p: False if p.iter == 2 else None)
    assert result.status == "cancelled"
    assert result.history[-1].scale == 1 and result.history[-1].scales > 1
    assert "scale 1 of" in result.message
    assert result.image.shape == (3, 24, 32)


def test_job_record_says_cancelled(tmp_path):
    inp = write_image(tmp_path / "c.png", 24, 24, seed=1)
    style = write_image(tmp_path / "s.png", 24, 24, seed=2)
    out = tmp_path / "out" / "c.png"
    out.parent.mkdir()
    spec = JobSpec(StyleConfig(**CFG), (str(style),), relay_progress=True)
    worker = JobWorker(spec, "cpu")
    try:
        task = Task(0, (Item(0, str(inp), "c.png", str(out)),))
        outcomes = worker.run_task(task, lambda ev: False if ev["iter"] == 3 else None)
    finally:
        worker.close()
    assert len(outcomes) == 1
    assert outcomes[0]["status"] == "cancelled"
    assert "cancelled at iteration 3" in outcomes[0]["error"]
    assert not out.exists()                                 # nothing written for a cancelled image
