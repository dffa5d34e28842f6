"""``--normalize-gradients``: each loss term's gradient at its layer divided by its L1 norm.

jcjohnson/neural-style's ``-normalize_gradients``: in the backward pass each content or style loss
module divides the gradient it sends to its layer by that gradient's L1 norm (plus 1e-8) and
multiplies it by its weight; the gradient from deeper layers passes through unchanged, and the
total-variation term is not normalised. With d_l = d (weight_l * E_l) / d F_l (our weighted
term), the gradient that enters layer l from term l becomes

    weight_l * d_l / |d_l|_1          (|.|_1 per image: a batch gives separate runs; 0 if d_l = 0)

and is propagated to the image as usual. (neural-style-pt's flag of the same name rescales the
scalar loss instead; we follow the original.) Where we differ from neural-style: it divides by
|d_l|_1 + 1e-8, which shrinks a gradient whose L1 norm is not far above 1e-8 -- and whether it is
depends on the loss's scale (its normalisation, the weights, the input convention). We divide by
|d_l|_1 floored at the smallest normal float32 (only to turn 0 / 0 into 0), so the direction
does not depend on the scale of any term.

**A heuristic.** The result is not the gradient of any loss: each term's gradient is rescaled
by a factor that depends on the current image. The reported losses stay the ordinary weighted
terms; the optimiser follows the normalised direction (our L-BFGS uses gradients only, never
the loss, so its safeguards still apply). Since the normalisation removes each term's scale,
the weights then set the share of each layer directly, whatever the loss normalisation or the
input convention of the weights.

How it is tested (``tests/test_normalize_gradients.py``): the autograd reference backend gets
it from :class:`NormalizeGradient` (identity forward, normalising backward) inserted between
each layer's feature and each loss term; the hand-written backends normalise the feature
gradients in ``stylegrad.terms.objective``. Both are compared with a third computation that asks
autograd for every term's feature gradient separately, normalises them by hand and
back-propagates their sum to the image.
"""
from __future__ import annotations

import torch

NORM_FLOOR = torch.finfo(torch.float32).tiny   # turns 0 / 0 into 0 and nothing else


def l1_normalized(d: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * d / |d|_1`` with the L1 norm taken per image (dim 0 is the batch),
    accumulated in float32 whatever d's dtype, floored at :data:`NORM_FLOOR`."""
    dims = tuple(range(1, d.ndim))
    norm = d.float().abs().sum(dim=dims, keepdim=True)
    return d * (weight / norm.clamp_min(NORM_FLOOR)).to(d.dtype)


class NormalizeGradient(torch.autograd.Function):
    """Identity in the forward; in the backward the incoming gradient ``d`` becomes
    ``l1_normalized(d, weight)``. Put one between a feature and each loss term computed on it."""

    @staticmethod
    def forward(ctx, feature: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return feature.view_as(feature)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return l1_normalized(grad, ctx.weight), None
