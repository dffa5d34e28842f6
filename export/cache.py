"""The export cache: graphs exported once per weights, loss layers and export options, reused
by every run that needs them (the ``onnxruntime`` backend; a TensorRT engine cache belongs here
too). Backends load what :func:`cached_export` gives them and build nothing themselves.

An entry is the folder ``cache_root() / <model>-<pool>-<key>``: ``key`` hashes the export
format version, the stylegrad and torch versions, model, pooling, loss layers, opset,
conv-backward mode and a SHA-256 of the weights. An entry is used when its manifest matches
and the graph files match the manifest's hashes; otherwise it is exported again into a
temporary folder that replaces it atomically (``stylegrad.io.fileio.atomic_directory``), so a
reader sees no entry or a complete one, and concurrent processes can share the cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from stylegrad.io.fileio import atomic_directory, cache_dir
from stylegrad.model.vgg import VGG
from stylegrad.terms import backward as bw

from .manifest import FORMAT_VERSION, read_manifest, stylegrad_version, verify_files, weights_digest
from .onnx_graphs import DEFAULT_OPSET, EXPORT_CONV_BACKWARD, tensor_specs


def cache_root() -> Path:
    """Where exported graphs are cached: the ``onnx`` folder of stylegrad's cache."""
    return cache_dir("onnx")


@dataclass(frozen=True)
class CachedExport:
    directory: Path
    manifest: dict
    specs: Dict[str, dict]     # tensor name -> dtype, symbolic shape, pools (onnx_graphs.tensor_specs)

    @property
    def forward_path(self) -> Path:
        return self.directory / self.manifest["forward"]["file"]

    @property
    def backward_path(self) -> Path:
        return self.directory / self.manifest["backward"]["file"]


def export_key(vgg: VGG, plan: bw.BackwardPlan, opset: int, conv_mode: str) -> Tuple[str, str]:
    """(cache key, weights digest) of the graphs for these weights, layers and options."""
    digest = weights_digest(vgg, plan)
    ident = {
        "format_version": FORMAT_VERSION, "stylegrad": stylegrad_version(), "torch": torch.__version__,
        "model": plan.model, "pool": plan.pool, "layers": list(plan.loss_layers), "opset": opset,
        "conv": conv_mode, "weights": digest,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24], digest


def cached_export(vgg: VGG, plan: bw.BackwardPlan, root: Optional[Path] = None, opset: int = DEFAULT_OPSET,
                  conv_mode: str = EXPORT_CONV_BACKWARD) -> CachedExport:
    """A valid export of ``vgg`` for ``plan``'s loss layers, from the cache or exported now."""
    from . import export_onnx   # looked up at call time (tests replace it to prove a cache hit)

    root = Path(root) if root is not None else cache_root()
    key, digest = export_key(vgg, plan, opset, conv_mode)
    final = root / f"{plan.model}-{plan.pool}-{key}"

    def valid() -> Optional[CachedExport]:
        m = read_manifest(final)
        ok = (m is not None and m.get("weights", {}).get("sha256") == digest
              and m.get("loss_layers") == list(plan.loss_layers) and m.get("opset") == opset
              and m.get("conv_backward") == conv_mode and verify_files(final, m))
        return CachedExport(final, m, tensor_specs(plan)) if ok else None

    found = valid()
    if found is not None:
        return found
    try:
        with atomic_directory(final) as tmp:
            manifest = export_onnx(vgg, tmp, plan.loss_layers, (), opset=opset, weights_id=f"sha256:{digest[:16]}",
                        conv_mode=conv_mode)
    except OSError:             # another process put its export in place first: use it if valid
        found = valid()
        if found is None:
            raise
        return found
    return CachedExport(final, manifest, tensor_specs(plan))
