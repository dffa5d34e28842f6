"""Test-wide settings: nothing may reach the network, caches live in a temporary folder."""
import os
import tempfile

import pytest
import torch

_TMP = tempfile.mkdtemp(prefix="stylegrad-tests-")
os.environ["STYLEGRAD_OFFLINE"] = "1"                       # imagenet weights never download in tests
os.environ.setdefault("STYLEGRAD_CACHE", os.path.join(_TMP, "cache"))
os.environ["TORCH_HOME"] = os.path.join(_TMP, "torch")      # no cached ImageNet weights either

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
