"""``stylegrad.export``: the two ONNX graphs, reloaded from disk and run by ONNX Runtime.

Tolerances: forward features vs the torch forward, max |diff| <= 1e-4 * max |feature| (ORT's
convolutions round differently from torch's; observed ~1e-6 relative after 12 convs); the
backward graph vs the torch backward fed the same saved tensors, relative error <= 1e-5 (the
argument of tests/test_backward.py; observed <= 4e-7).
"""
import json
import os

import numpy as np
import onnx
import pytest
import torch

from stylegrad.config import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from stylegrad.errors import ConfigError
from stylegrad.export import ExportError, check_graph, export_onnx, graph_ops, read_manifest, verify_files
from stylegrad.export.onnx_graphs import ALLOWED_OPS
from stylegrad.model import vgg as vggmod
from stylegrad.model.weights import random_vgg
from stylegrad.terms import backward as bw
from tests.helpers import rel_err

ort = pytest.importorskip("onnxruntime")

# Transcribed from onnx-tensorrt docs/operators.md (TensorRT 10.x support matrix), the subset a
# VGG forward/backward could plausibly use. ALLOWED_OPS must stay inside it.
TENSORRT_SUPPORTED = {
    "Add", "AveragePool", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose",
    "DepthToSpace", "Div", "Equal", "Expand", "Gather", "Greater", "Identity", "MaxPool", "Mul", "Pad",
    "Relu", "Reshape", "Resize", "Shape", "Slice", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where",
    "Tile", "Split", "Range", "Min", "Max", "Not", "And", "Or", "Less", "GreaterOrEqual",
}
TENSORRT_UNSUPPORTED = {"MaxUnpool", "BitShift", "BitwiseAnd", "Col2Im"}
NARROW_TYPES = {onnx.TensorProto.BOOL, onnx.TensorProto.UINT8}

LAYERS = {"default": (DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS), "shallow": (("relu2_2",), ("relu1_1", "pool1", "relu1_2"))}


@pytest.fixture(scope="module", params=[("avg", "default"), ("max", "default"), ("max", "shallow")],
                ids=lambda p: "-".join(p))
def exported(request, tmp_path_factory):
    pool, layers = request.param
    vgg = random_vgg("vgg19", 3, pool)
    out = tmp_path_factory.mktemp(f"onnx-{pool}-{layers}")
    content, style = LAYERS[layers]
    manifest = export_onnx(vgg, out, content, style, weights_id="random:3")
    return vgg, out, manifest


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_files_manifest_and_atomicity(exported):
    vgg, out, manifest = exported
    assert sorted(os.listdir(out)) == ["backward.onnx", "forward.onnx", "manifest.json"]   # no temp files
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest == read_manifest(out)
    assert verify_files(out, manifest)
    assert manifest["opset"] == 17 and manifest["model"] == "vgg19"
    assert manifest["weights"]["id"] == "random:3" and len(manifest["weights"]["sha256"]) == 64
    assert manifest["stylegrad_version"]
    plan = bw.make_plan("vgg19", manifest["pool"], manifest["loss_layers"])
    assert [o["name"] for o in manifest["forward"]["outputs"]] == list(plan.loss_layers) + list(plan.saved_keys)
    assert manifest["backward"]["outputs"][0]["name"] == "grad_image"
    assert manifest["min_side"] == 2 ** max(bw.pools_before("vgg19", l) for l in plan.loss_layers)


def test_checker_and_operator_set(exported):
    _, out, _ = exported
    assert ALLOWED_OPS <= TENSORRT_SUPPORTED and not (ALLOWED_OPS & TENSORRT_UNSUPPORTED)
    for name in ("forward.onnx", "backward.onnx"):
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model, full_check=True)
        ops = {n.op_type for n in model.graph.node}
        assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
        # TensorRT's type limits: uint8 only at the graph I/O (cast at once); bool only into a
        # Cast, a Where condition or a Shape (Pad, Equal, Mul... take no bool)
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in
                 list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
        types.update({i.name: i.data_type for i in model.graph.initializer})
        for node in model.graph.node:
            for k, i in enumerate(node.input):
                if node.op_type == "Cast" or (node.op_type == "Where" and k == 0):
                    continue
                if node.op_type == "Shape" and types.get(i) == onnx.TensorProto.BOOL:
                    continue
                assert types.get(i) not in NARROW_TYPES, (name, node.op_type, i)
                assert i == "" or i in types, (name, node.op_type, i)   # every type was inferred
        # Conv / ConvTranspose weights are initializers (TensorRT requires it)
        inits = {i.name for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type in ("Conv", "ConvTranspose"):
                assert node.input[1] in inits
        # batch, height and width are symbolic
        for v in list(model.graph.input) + list(model.graph.output):
            dims = v.type.tensor_type.shape.dim
            assert dims[0].dim_param and dims[2].dim_param and dims[3].dim_param, v.name


@pytest.mark.parametrize("shape", [(1, 3, 37, 23), (2, 3, 16, 17), (1, 3, 33, 64)])
def test_graphs_match_torch_at_odd_sizes(exported, shape):
    vgg, out, manifest = exported
    plan = bw.make_plan("vgg19", manifest["pool"], manifest["loss_layers"])
    fwd, bwd = _session(out / "forward.onnx"), _session(out / "backward.onnx")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    names = [o.name for o in fwd.get_outputs()]
    outs = dict(zip(names, fwd.run(None, {"image": x.numpy()})))

    ref = vggmod.forward(vgg, x, plan.loss_layers)
    for layer, f in ref.items():
        err = np.abs(outs[layer] - f.numpy()).max()
        assert err <= 1e-4 * float(f.abs().max()), (layer, err)
    feats, saved = bw.forward_saving(vgg, plan, x)
    for k, t in saved.items():
        assert outs[k].dtype == t.numpy().dtype and outs[k].shape == tuple(t.shape), k
        # masks / winners may only differ where ORT's rounding flips a value at exactly 0 or a tie
        assert (outs[k] != t.numpy()).mean() < 1e-3, k

    g = torch.Generator().manual_seed(7)
    grads = {l: torch.randn(feats[l].shape, generator=g) for l in plan.loss_layers}
    feed = {}
    for i in bwd.get_inputs():
        feed[i.name] = grads[i.name[5:]].numpy() if i.name.startswith("grad_") else outs[i.name]
    got = torch.from_numpy(bwd.run(None, feed)[0])
    # the torch backward on the ORT forward's own saved state: isolates the backward graph
    ort_feats = {l: torch.from_numpy(outs[l]) for l in plan.loss_layers}
    ort_saved = {k: torch.from_numpy(outs[k]) for k in plan.saved_keys}
    want = bw.backward(vgg, plan, ort_feats, ort_saved, grads)
    assert got.shape == x.shape
    assert rel_err(got, want) <= 1e-5


def test_tiny_images_with_a_graph_for_the_layers_they_reach(tmp_path):
    """1x1 reaches only block 1: export those layers; the graph still has dynamic sizes."""
    vgg = random_vgg("vgg19", 0, "max")
    layers = bw.reachable_layers("vgg19", DEFAULT_STYLE_LAYERS + ("relu1_2",), 1, 1)
    assert layers == ("relu1_1", "relu1_2")
    m = export_onnx(vgg, tmp_path, (), layers)
    assert m["min_side"] == 1
    fwd = _session(tmp_path / "forward.onnx")
    for shape in [(1, 3, 1, 1), (2, 3, 1, 7), (1, 3, 5, 3)]:
        x = torch.rand(*shape)
        outs = dict(zip([o.name for o in fwd.get_outputs()], fwd.run(None, {"image": x.numpy()})))
        ref = vggmod.forward(vgg, x, layers)
        for l in layers:
            np.testing.assert_allclose(outs[l], ref[l].numpy(), rtol=1e-4, atol=1e-5)


def test_reexport_replaces_and_corruption_is_detected(tmp_path, capfd):
    vgg = random_vgg("vgg19", 0, "avg")
    m1 = export_onnx(vgg, tmp_path, (), ("relu1_1",), weights_id="random:0")
    m2 = export_onnx(vgg, tmp_path, (), ("relu1_1",), weights_id="random:0")
    assert capfd.readouterr() == ("", "")   # library code prints nothing
    assert m1["forward"]["sha256"] == m2["forward"]["sha256"]     # deterministic export
    assert sorted(os.listdir(tmp_path)) == ["backward.onnx", "forward.onnx", "manifest.json"]
    with open(tmp_path / "backward.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    assert not verify_files(tmp_path, m2)


def test_conv_transpose_backward_graph(tmp_path):
    """The other conv_mode: ConvTranspose with the forward's weights, same gradient."""
    vgg = random_vgg("vgg19", 0, "avg")
    m = export_onnx(vgg, tmp_path, ("relu2_1",), ("relu1_2",), conv_mode="conv_transpose2d")
    assert m["conv_backward"] == "conv_transpose2d"
    check_graph(tmp_path / "backward.onnx")
    assert "ConvTranspose" in graph_ops(tmp_path / "backward.onnx")
    plan = bw.make_plan("vgg19", "avg", m["loss_layers"])
    x = torch.rand(2, 3, 9, 14)
    feats, saved = bw.forward_saving(vgg, plan, x)
    grads = {l: torch.randn_like(f) for l, f in feats.items()}
    bwd = _session(tmp_path / "backward.onnx")
    feed = {i.name: (grads[i.name[5:]] if i.name.startswith("grad_") else {**feats, **saved}[i.name]).numpy()
            for i in bwd.get_inputs()}
    got = torch.from_numpy(bwd.run(None, feed)[0])
    assert rel_err(got, bw.backward(vgg, plan, feats, saved, grads)) <= 1e-5


def test_opset_13_also_exports(tmp_path):
    vgg = random_vgg("vgg19", 0, "max")
    m = export_onnx(vgg, tmp_path, ("relu2_1",), (), opset=13)
    assert onnx.load(str(tmp_path / "forward.onnx")).opset_import[0].version == 13
    assert m["opset"] == 13
    check_graph(tmp_path / "backward.onnx")


def test_bad_arguments(tmp_path):
    vgg = random_vgg("vgg19", 0, "avg")
    with pytest.raises(ConfigError):
        export_onnx(vgg, tmp_path, ("relu9_9",), ())
    with pytest.raises(ConfigError):
        export_onnx(vgg, tmp_path, (), ())
    with pytest.raises(ConfigError):
        export_onnx(vgg, tmp_path, ("relu1_1",), (), opset=7)
    with pytest.raises(ConfigError):
        export_onnx(vgg, tmp_path, ("relu1_1",), (), conv_mode="fft")
    assert not any(p.suffix == ".tmp" for p in tmp_path.iterdir())


def test_check_graph_rejects_a_disallowed_operator(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("MaxUnpool", ["x", "i"], ["y"], kernel_shape=[2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
                                            helper.make_tensor_value_info("i", TensorProto.INT64, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert graph_ops(path) == {"MaxUnpool"}
    with pytest.raises(ExportError):
        check_graph(path)
