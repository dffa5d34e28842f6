"""Weights: random, a user's state_dict, ImageNet download/caching (offline, with local files)."""
import hashlib
import os

import pytest
import torch

from stylegrad import weights as W
from stylegrad.errors import WeightsError
from stylegrad.vgg import layer_specs


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
    assert "internet" in msg and "--weights PATH" in msg and "--weights random" in msg


def test_imagenet_uses_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, state = _torchvision_state("vgg16", 3)
    p = W.hub_checkpoint_path("vgg16")
    assert p.parent == tmp_path / "hub" / "checkpoints"
    p.parent.mkdir(parents=True)
    torch.save(state, p)
    vgg = W.load_vgg("imagenet", "vgg16")                  # no download attempted (offline in tests)
    assert torch.equal(vgg.convs["conv1_1"].weight, state["features.0.weight"])


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
