"""The loss terms in plain differentiable torch: the formulation the autograd reference uses.

Per image of a batch (each returns a (B,) tensor):
  content  L_c = 1/2 * sum (F - P)^2                       (paper eq. 1)
  gram     G = F F^T, F of shape (C, M), M = H*W            (paper eq. 3)
  style    E_l = sum (G - A)^2 / (4 N_l^2 M_l^2)            (paper eq. 4)
  tv       L_tv = sum (x[i+1,j]-x[i,j])^2 + (x[i,j+1]-x[i,j])^2   (not in the paper)
           or, with norm "l1", sum |x[i+1,j]-x[i,j]| + |x[i,j+1]-x[i,j]|   (neural-style-pt's)

The hand-written backends get the same values and gradients from ``stylegrad.kernels``;
the two are tested against each other and against float64.
"""
from __future__ import annotations

import torch


def content_loss(F: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F - P).pow(2).flatten(1).sum(1)


def gram(F: torch.Tensor) -> torch.Tensor:
    B, C = F.shape[:2]
    f = F.reshape(B, C, -1)
    return f @ f.transpose(1, 2)


def style_layer_loss(F: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    B, N = F.shape[:2]
    M = F[0, 0].numel()
    G = gram(F)
    return (G - A).pow(2).flatten(1).sum(1) / (4.0 * N * N * M * M)


def tv_loss(x: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    if norm == "l1":
        return dh.abs().flatten(1).sum(1) + dw.abs().flatten(1).sum(1)
    return dh.pow(2).flatten(1).sum(1) + dw.pow(2).flatten(1).sum(1)
