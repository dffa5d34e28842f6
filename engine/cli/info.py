"""``stylegrad info``: what this machine offers stylegrad."""
from __future__ import annotations

import importlib
import json
import platform

import torch


def gather_info() -> dict:
    from stylegrad.backends.registry import backend_names, backend_status
    from stylegrad.model.weights import IMAGENET_URLS, hub_checkpoint_path

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "devices": ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())],
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
        info["onnxruntime_providers"] = []
    for mod, key in (("tensorrt", "tensorrt"), ("cuda.core", "cuda_core"), ("cuda.bindings", "cuda_bindings")):
        try:
            m = importlib.import_module(mod)
            info[key] = getattr(m, "__version__", "imported")
        except Exception:  # ImportError, or a broken install
            info[key] = None
    info["weights_cache"] = {m: {"path": str(hub_checkpoint_path(m)), "cached": hub_checkpoint_path(m).exists()}
                             for m in IMAGENET_URLS}
    video = {}
    for mod, key in (("av", "av"), ("cv2", "opencv")):
        try:
            video[key] = importlib.import_module(mod).__version__
        except Exception:
            video[key] = None
    # stylegrad video's temporal loss is a pixel term added to each evaluation, eagerly: the
    # cuda backend runs frames with it in its eager loop, not in its CUDA graph
    video["temporal_term"] = "eager on every backend (cuda: eager loop, no CUDA graph)"
    info["video"] = video
    info["terms"] = term_paths()
    info["backends"] = {}
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        for name in backend_names():
            ok, why = backend_status(name, torch.device(dev))
            info["backends"][f"{name}@{dev}"] = "yes" if ok else f"no: {why}"
    return info


def term_paths() -> dict:
    """Per loss term (``stylegrad.terms``): what runs it on the cuda backend, and elsewhere."""
    from stylegrad.terms import TERM_CLASSES
    from stylegrad.video.temporal import TemporalTerm

    out = {}
    for cls in TERM_CLASSES + (TemporalTerm,):
        out[cls.name] = {"cuda": cls.describe_path(True), "torch/onnxruntime": cls.describe_path(False),
                         "reference": "autograd (stylegrad.terms.losses)"}
    return out


def cmd_info(args) -> int:
    info = gather_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"python {info['python']}, torch {info['torch']}")
    print("devices: " + ", ".join(info["devices"]))
    print(f"onnxruntime: {info['onnxruntime'] or 'not installed'}; providers: {', '.join(info['onnxruntime_providers']) or '-'}")
    print(f"tensorrt: {info['tensorrt'] or 'not importable'}")
    print(f"cuda-python: cuda.core {info['cuda_core'] or 'not importable'}, cuda.bindings {info['cuda_bindings'] or 'not importable'}")
    for m, w in info["weights_cache"].items():
        print(f"weights {m}: {'cached' if w['cached'] else 'not cached'} at {w['path']}")
    v = info["video"]
    print(f"video: PyAV {v['av'] or 'not installed'}, OpenCV {v['opencv'] or 'not installed'}"
          + ("" if v["av"] and v["opencv"] else " (pip install 'stylegrad[video]')")
          + f"; temporal term: {v['temporal_term']}")
    print("loss terms (what runs each):")
    for name, paths in info["terms"].items():
        print(f"  {name:13s} cuda: {paths['cuda']}; torch/onnxruntime: {paths['torch/onnxruntime']}")
    print("backends:")
    for k, v in info["backends"].items():
        print(f"  {k:24s} {v}")
    return 0
