"""``manifest.json``: what an exported directory holds, and how to tell whether it is current."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from stylegrad.io.fileio import file_sha256
from stylegrad.model.vgg import CAFFE_PIXEL_SCALE, VGG, preprocess_stats
from stylegrad.terms import backward as bw

FORMAT = "stylegrad-onnx"
FORMAT_VERSION = 2   # bump when the graphs' inputs, outputs or semantics change


def stylegrad_version() -> str:
    try:
        from importlib.metadata import version

        return version("stylegrad")
    except Exception:  # running from a source tree that is not installed
        import stylegrad

        return getattr(stylegrad, "__version__", "unknown")


def weights_digest(vgg: VGG, plan: bw.BackwardPlan) -> str:
    """SHA-256 of the conv weights and biases the graphs contain (float32, network order) and of
    the input convention baked into the forward graph."""
    # the default pixel scale leaves the digest of earlier exports unchanged
    scale = "" if vgg.pixel_scale == CAFFE_PIXEL_SCALE else f"|{vgg.pixel_scale!r}"
    h = hashlib.sha256(f"{vgg.model}|{vgg.preprocess}{scale}".encode())
    for s in plan.specs:
        if s.kind == "conv":
            c = vgg.convs[s.name]
            for t in (c.weight, c.bias):
                a = t.detach().to("cpu", torch.float32).contiguous()
                h.update(s.name.encode())
                h.update(str(tuple(a.shape)).encode())
                h.update(a.numpy().tobytes())
    return h.hexdigest()


def _io(names: Sequence[str], specs: Dict[str, dict]) -> list:
    return [{"name": n, "dtype": specs[n]["dtype"], "shape": specs[n]["shape"]} for n in names]


def build_manifest(vgg: VGG, plan: bw.BackwardPlan, content_layers: Sequence[str], style_layers: Sequence[str],
                   opset: int, weights_id: str, files: Dict[str, Path], forward_outputs: Sequence[str],
                   backward_inputs: Sequence[str], specs: Dict[str, dict], conv_mode: str) -> dict:
    min_side = 2 ** max((bw.pools_before(plan.model, l) for l in plan.loss_layers), default=0)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stylegrad_version": stylegrad_version(),
        "torch_version": torch.__version__,
        "opset": opset,
        "model": plan.model,
        "pool": plan.pool,
        "weights": {"id": weights_id, "sha256": weights_digest(vgg, plan)},
        "content_layers": list(content_layers),
        "style_layers": list(style_layers),
        "loss_layers": list(plan.loss_layers),
        "saved": list(plan.saved_keys),
        "conv_backward": conv_mode,
        "min_side": min_side,
        "shape_rules": (
            "N, H, W are dynamic. A tensor after k 2x2 pools (floor mode) has spatial size "
            "H_div{2**k} = floor(H / 2**k), W_div{2**k} = floor(W / 2**k). Images with "
            f"min(H, W) < min_side ({min_side}) do not reach the deepest layer: export for the "
            "layers they reach."
        ),
        "preprocess": vgg.preprocess,
        "pixel_scale": vgg.pixel_scale,
        "normalization": {
            "where": "inside forward.onnx: (image - mean) / std per channel, image RGB in [0, 1]",
            "mean": list(preprocess_stats(vgg.preprocess, vgg.pixel_scale)[0]),
            "std": list(preprocess_stats(vgg.preprocess, vgg.pixel_scale)[1]),
        },
        "forward": {
            "file": files["forward"].name,
            "sha256": file_sha256(files["forward"]),
            "inputs": _io(["image"], specs),
            "outputs": _io(forward_outputs, specs),
        },
        "backward": {
            "file": files["backward"].name,
            "sha256": file_sha256(files["backward"]),
            "inputs": _io(backward_inputs, specs),
            "outputs": _io(["grad_image"], specs),
        },
    }


def read_manifest(directory: Path) -> Optional[dict]:
    """The manifest of an export directory, or None when absent or unreadable."""
    try:
        with open(Path(directory) / "manifest.json") as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def verify_files(directory: Path, manifest: dict) -> bool:
    """Both graph files exist and match the hashes the manifest recorded."""
    try:
        for part in ("forward", "backward"):
            p = Path(directory) / manifest[part]["file"]
            if file_sha256(p) != manifest[part]["sha256"]:
                return False
    except (OSError, KeyError, TypeError):
        return False
    return True
