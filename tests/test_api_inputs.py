"""What the Python API accepts and refuses: inputs that are not images, seeds out of range,
config values of the wrong type, errors typed by what went wrong, and one Stylizer shared
between threads (README "Reliability")."""
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from stylegrad import StyleConfig, StyleGradError, Stylizer
from stylegrad.errors import ConfigError, ImageError
from stylegrad.io import images as imgs
from tests.helpers import EXAMPLES

TINY = dict(weights="random", backend="torch", size=24, iters=6)


@pytest.fixture(scope="module")
def stylizer():
    s = Stylizer(StyleConfig(**TINY))
    yield s
    s.close()


def _closed_pil():
    img = Image.open(EXAMPLES / "style.png")
    img.close()
    return img


NOT_IMAGES = {
    "meta tensor": lambda: torch.empty(3, 16, 16, device="meta"),
    "sparse tensor": lambda: torch.rand(3, 16, 16).to_sparse(),
    "quantized tensor": lambda: torch.quantize_per_tensor(torch.rand(3, 16, 16), 0.01, 0, torch.quint8),
    "closed PIL image": _closed_pil,
    "None": lambda: None,
    "bytes": lambda: b"\x89PNG",
    "a list of numbers": lambda: [[0.5, 0.5], [0.5, 0.5]],
    "object array": lambda: np.array([[object()]]),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", sorted(NOT_IMAGES))
def test_content_that_is_not_an_image_is_a_stylegrad_error_naming_it(stylizer, kind):
    with pytest.raises(StyleGradError, match=r"^content\b"):
        stylizer.run(NOT_IMAGES[kind](), styles=[EXAMPLES / "style.png"])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ["meta tensor", "sparse tensor", "closed PIL image", "None"])
def test_style_that_is_not_an_image_is_a_stylegrad_error_naming_it(stylizer, kind):
    with pytest.raises(StyleGradError, match=r"^styles\[1\]"):
        stylizer.set_styles([EXAMPLES / "style.png", NOT_IMAGES[kind]()])
    with pytest.raises(StyleGradError, match=r"^styles\[0\]\[0\]"):
        stylizer.run_batch([EXAMPLES / "content.png"], styles=[[NOT_IMAGES[kind]()]])


def test_one_style_path_is_not_split_into_characters(stylizer):
    stylizer.set_styles(str(EXAMPLES / "style.png"))      # one image, not a sequence of 1-letter paths
    assert len(stylizer.targets.style_sizes()) == 1


def test_wrong_argument_types_are_stylegrad_errors(stylizer):
    with pytest.raises(StyleGradError, match="contents must be a list"):
        stylizer.run_batch(EXAMPLES / "content.png")
    with pytest.raises(StyleGradError, match="callback"):
        stylizer.run(EXAMPLES / "content.png", [EXAMPLES / "style.png"], callback=5)


@pytest.mark.parametrize("seed", [2 ** 63, 2 ** 70, -1])
def test_seeds_outside_0_to_2_63_are_refused_when_the_config_is_made(seed):
    with pytest.raises(ConfigError, match="--seed must be an integer from 0 to 2\\*\\*63 - 1"):
        StyleConfig(seed=seed)


def test_the_largest_seed_runs():
    s = Stylizer(StyleConfig(**{**TINY, "init": "noise", "seed": 2 ** 63 - 1}))
    try:
        assert s.run(EXAMPLES / "content.png", [EXAMPLES / "style.png"]).status == "ok"
    finally:
        s.close()


# -- one Stylizer, two threads ---------------------------------------------------------------------

def test_a_stylizer_shared_by_two_threads_gives_each_its_own_painting():
    """Each thread runs its own painting on one shared Stylizer; each result must equal the
    single-threaded result for that painting. The first thread pauses after its call has
    started (while its targets are being built) until the second thread has called run(),
    so the calls would interleave if nothing kept them apart."""
    content = EXAMPLES / "content.png"
    rng = np.random.default_rng(7)
    paintings = {"A": (rng.random((20, 20, 3)) * 255).astype(np.uint8),
                 "B": np.asarray(Image.open(EXAMPLES / "style.png").convert("RGB"))}
    cfg = StyleConfig(**{**TINY, "iters": 5})
    s = Stylizer(cfg)
    try:
        alone = {k: s.run(content, styles=[p]).image for k, p in paintings.items()}
        assert not torch.equal(alone["A"], alone["B"])        # the paintings give different pictures

        a_inside, b_calling = threading.Event(), threading.Event()
        prepare = s.prepare

        def slow_prepare(*args, **kwargs):      # thread A, inside its run: wait for B's call
            if threading.current_thread().name == "A":
                a_inside.set()
                if b_calling.wait(5):
                    time.sleep(0.5)             # B is calling run(): give it time to step in
            return prepare(*args, **kwargs)

        s.prepare = slow_prepare
        results, errors = {}, []

        def work(key):
            try:
                if key == "B":
                    assert a_inside.wait(10)
                    b_calling.set()
                results[key] = s.run(content, styles=[paintings[key]])
            except BaseException as e:      # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,), name=k) for k in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for key in ("A", "B"):
            assert results[key].status == "ok"
            assert torch.equal(results[key].image, alone[key]), f"thread {key} got another painting's result"
    finally:
        s.close()


SMALL = dict(weights="random", backend="reference", size=16, iters=10, lbfgs_history=5)


def test_config_types_are_checked_at_construction():
    for kw, needle in [(dict(style_weight="1e7"), "style_weight must be a number"),
                       (dict(content_weight=None), "content_weight must be a number"),
                       (dict(size=True), "size must be an integer"), (dict(iters=2.5), "iters must be an integer"),
                       (dict(optimizer=1), "optimizer must be a string"),
                       (dict(style_blend_weights="1,2"), "tuple of numbers"),
                       (dict(lr=float("inf")), "--lr must be a finite"),
                       (dict(style_scale=float("inf")), "--style-scale must be a finite")]:
        with pytest.raises(ConfigError, match=needle):
            StyleConfig(**kw)
    c = StyleConfig(style_layers="relu1_1", content_layers=["relu3_1"], size=np.int64(64), style_weight=3)
    assert c.style_layers == ("relu1_1",) and c.content_layers == ("relu3_1",)   # not split into letters
    assert type(c.size) is int and type(c.style_weight) is float
    assert StyleConfig(style_layers="relu1_1, relu2_1").style_layers == ("relu1_1", "relu2_1")


def test_api_errors_are_typed():
    st = Stylizer(StyleConfig(**SMALL))
    st.set_styles([torch.rand(3, 8, 8)])
    with pytest.raises(ImageError, match="no pixels"):
        st.run(Image.new("RGB", (0, 0)))
    with pytest.raises(ConfigError, match="at least one"):
        st.run_batch([])
    with pytest.raises(ConfigError, match="1 name.* for 2"):
        st.run_batch([torch.rand(3, 8, 8), torch.rand(3, 8, 8)], names=["a"])
    with pytest.raises(ImageError, match="same size"):
        st.run_batch([torch.rand(3, 8, 8), torch.rand(3, 8, 6)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # numpy cast warnings must not leak
        with pytest.raises(ImageError, match="expected"):
            imgs.to_tensor(np.full((5, 6, 3), 1e300))
        with pytest.raises(ImageError, match="NaN"):
            imgs.to_tensor(np.full((5, 6, 3), np.nan, np.float16))
