"""Small shared helpers for tests (imported as tests.helpers or via sys.path)."""
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "engine" / "examples"


def write_image(path, w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(a, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return Path(path)


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))
