"""stylegrad.export: the VGG forward and hand-written backward as two ONNX graphs.

>>> from stylegrad.model.weights import random_vgg
>>> manifest = export_onnx(random_vgg("vgg19"), "out", ["relu4_2"], ["relu1_1", "relu2_1"],
...                        weights_id="random:0")                     # doctest: +SKIP

writes ``out/forward.onnx``, ``out/backward.onnx`` and ``out/manifest.json`` (each atomically,
``stylegrad.io.fileio``; the manifest last, with the graphs' SHA-256, so a reader that finds a
manifest whose hashes match has a complete export). See ``onnx_graphs`` for the
graphs' inputs and outputs and ``manifest`` for the manifest's fields.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from stylegrad.errors import ConfigError, StyleGradError
from stylegrad.model.vgg import VGG, layer_names
from stylegrad.terms import backward as bw

from stylegrad.io.fileio import atomic_path, write_json_atomic

from .manifest import FORMAT_VERSION, read_manifest, verify_files
from .onnx_graphs import DEFAULT_OPSET, EXPORT_CONV_BACKWARD

MIN_OPSET, MAX_OPSET = 13, 20   # Resize/Pad/DepthToSpace forms we emit; TorchScript exporter's top


class ExportError(StyleGradError):
    """An export that failed or produced a graph outside the allowed operator set."""


def graph_ops(path: Union[str, Path]) -> set:
    """Operator types used by an ONNX file (main graph; ours has no subgraphs)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {n.op_type for n in model.graph.node}


def check_graph(path: Union[str, Path]) -> None:
    """onnx.checker plus the operator allow-list; raises :class:`ExportError`."""
    import onnx

    from .onnx_graphs import ALLOWED_OPS

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx raises ValidationError and friends
        raise ExportError(f"{Path(path).name} fails onnx.checker: {str(e).splitlines()[0]}") from None
    extra = graph_ops(path) - ALLOWED_OPS
    if extra:
        raise ExportError(f"{Path(path).name} uses operators outside the TensorRT-safe set: {', '.join(sorted(extra))}")


def export_onnx(vgg: VGG, out_dir: Union[str, Path], content_layers: Sequence[str], style_layers: Sequence[str],
                opset: int = DEFAULT_OPSET, weights_id: str = "unknown", conv_mode: str = EXPORT_CONV_BACKWARD) -> dict:
    """Export forward/backward graphs for ``vgg`` (its model and pooling) and the loss layers
    ``content_layers`` + ``style_layers``; returns the manifest written to ``out_dir``.

    ``weights_id`` is recorded as given (e.g. ``stylegrad.model.weights.weights_identity``); the
    manifest also holds a SHA-256 of the weights themselves. ``conv_mode`` is how the backward
    graph undoes a convolution (``"conv2d"`` with flipped weights, the default, measured faster
    in ONNX Runtime, or ``"conv_transpose2d"``); both are exact.
    """
    from .manifest import build_manifest
    from .onnx_graphs import backward_input_names, export_graphs, forward_output_names, tensor_specs

    layers = list(dict.fromkeys(list(content_layers) + list(style_layers)))
    known = set(layer_names(vgg.model))
    bad = [l for l in layers if l not in known]
    if bad:
        raise ConfigError(f"unknown layer(s) for {vgg.model}: {', '.join(bad)}")
    if not layers:
        raise ConfigError("nothing to export: no content or style layers")
    if conv_mode not in bw.CONV_MODES:
        raise ConfigError(f"conv_mode must be one of {', '.join(bw.CONV_MODES)}, got {conv_mode!r}")
    if not (MIN_OPSET <= int(opset) <= MAX_OPSET):
        raise ConfigError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    plan = bw.make_plan(vgg.model, vgg.pool, layers)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"cannot export into {out}: it is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the export folder {out}: {e.strerror or e}") from None

    final = {"forward": out / "forward.onnx", "backward": out / "backward.onnx"}
    # both graphs are checked before either is put in place
    with atomic_path(final["forward"]) as tmp_f, atomic_path(final["backward"]) as tmp_b:
        try:
            export_graphs(vgg, plan, str(tmp_f), str(tmp_b), opset=int(opset), conv_mode=conv_mode)
        except Exception as e:
            raise ExportError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        check_graph(tmp_f)
        check_graph(tmp_b)
    specs = tensor_specs(plan)
    manifest = build_manifest(vgg, plan, content_layers, style_layers, int(opset), weights_id, final,
                              forward_output_names(plan), backward_input_names(plan), specs, conv_mode)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


__all__ = ["DEFAULT_OPSET", "EXPORT_CONV_BACKWARD", "ExportError", "FORMAT_VERSION", "check_graph", "export_onnx", "graph_ops", "read_manifest",
           "verify_files"]
