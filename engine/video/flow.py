"""Optical flow (OpenCV), warping and the forward-backward consistency check of Ruder et al.

Conventions: frames are (H, W, 3) uint8 RGB (flow) or (3, H, W) float tensors (warping). The
*backward flow* of frame t, ``b = flow(frame_t -> frame_t-1)``, says for each pixel x of frame
t where it was in frame t-1: ``x + b(x)``. Warping the stylised frame t-1 with it,
``warp(S_t-1, b)(x) = S_t-1(x + b(x))`` (bilinear), lines it up with frame t.

Reliability weight (Ruder, Dosovitskiy & Brox 2016, eqs. 5-6), per pixel x of frame t, with the
forward flow ``f = flow(frame_t-1 -> frame_t)`` sampled where x came from, ``f~ = f(x + b(x))``:

- disoccluded / inconsistent where ``|f~ + b|^2 > 0.01 (|f~|^2 + |b|^2) + 0.5``;
- motion boundary where ``|grad b_u|^2 + |grad b_v|^2 > 0.01 |b|^2 + 0.002``;
- outside the frame where ``x + b(x)`` is not inside frame t-1;

the weight is 0 there and 1 elsewhere.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from stylegrad.video import require

FLOW_METHODS = ("dis", "farneback")


def _gray(rgb: np.ndarray) -> np.ndarray:
    cv2 = require("cv2")
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def optical_flow(src: np.ndarray, dst: np.ndarray, method: str = "dis") -> np.ndarray:
    """Flow (H, W, 2) float32 (dx, dy) from ``src`` to ``dst``: ``src(x) ~ dst(x + flow(x))``.

    ``dis``: OpenCV's DIS (Kroeger et al. 2016), medium preset. ``farneback``: Farnebäck's
    polynomial expansion (pyramid 0.5 x 5 levels, window 15)."""
    cv2 = require("cv2")
    a, b = _gray(src), _gray(dst)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(a, b, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 15, 3, 5, 1.2, 0)
    else:
        raise ValueError(f"flow method must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """grid_sample grid (1, H, W, 2) for sampling at x + flow(x), align_corners=True."""
    H, W = flow.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=flow.dtype), torch.arange(W, dtype=flow.dtype), indexing="ij")
    gx = (xs + flow[..., 0]) * (2.0 / max(W - 1, 1)) - 1.0
    gy = (ys + flow[..., 1]) * (2.0 / max(H - 1, 1)) - 1.0
    return torch.stack([gx, gy], -1)[None]


def warp(image: torch.Tensor, flow: np.ndarray) -> torch.Tensor:
    """``image`` (C, H, W) sampled at x + flow(x), bilinear (border values outside the frame;
    those pixels have weight 0 in :func:`consistency_weight`)."""
    fl = torch.from_numpy(flow).to(image.dtype)
    out = F.grid_sample(image[None].cpu(), _grid(fl), mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].to(image.device)


def inside_frame(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: x + flow(x) lies inside the frame."""
    H, W = flow.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    px, py = xs + flow[..., 0], ys + flow[..., 1]
    return (px >= 0) & (px <= W - 1) & (py >= 0) & (py <= H - 1)


def consistency_weight(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Per-pixel weight (H, W) float32 of frame t: 1 where the backward flow is reliable, 0
    where the forward-backward check fails, at motion boundaries and where the flow leaves
    the frame (see the module docstring)."""
    b = backward.astype(np.float32)
    f_t = torch.from_numpy(np.ascontiguousarray(forward.transpose(2, 0, 1)))
    f_tilde = warp(f_t, b).numpy().transpose(1, 2, 0)
    s = f_tilde + b
    inconsistent = (s ** 2).sum(-1) > 0.01 * ((f_tilde ** 2).sum(-1) + (b ** 2).sum(-1)) + 0.5
    du_y, du_x = np.gradient(b[..., 0])
    dv_y, dv_x = np.gradient(b[..., 1])
    boundary = du_x ** 2 + du_y ** 2 + dv_x ** 2 + dv_y ** 2 > 0.01 * (b ** 2).sum(-1) + 0.002
    ok = ~inconsistent & ~boundary & inside_frame(b)
    return ok.astype(np.float32)


def flows_and_weight(prev_rgb: np.ndarray, cur_rgb: np.ndarray, method: str = "dis") -> Tuple[np.ndarray, np.ndarray]:
    """(backward flow of the current frame, its reliability weight) from two content frames."""
    backward = optical_flow(cur_rgb, prev_rgb, method)
    forward = optical_flow(prev_rgb, cur_rgb, method)
    return backward, consistency_weight(backward, forward)


def warping_error(cur: torch.Tensor, prev: torch.Tensor, backward: np.ndarray, weight: np.ndarray) -> float:
    """Mean absolute difference between ``cur`` (3, H, W) and ``prev`` warped by the backward
    flow, over the pixels with weight 1 (values in [0, 1]; NaN when no pixel is kept)."""
    w = torch.from_numpy(weight).to(cur.dtype)
    kept = float(w.sum())
    if kept == 0:
        return float("nan")
    d = (cur.float().cpu() - warp(prev.float().cpu(), backward)).abs().mean(0)
    return float((d * w).sum() / kept)
