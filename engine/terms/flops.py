"""FLOPs and bytes of one iteration, counted by hand from the layer shapes (for rooflines).

Conventions: a multiply-add is 2 FLOPs. One iteration = forward to the deepest loss layer +
backward w.r.t. the input only (no weight gradients) + a Gram matrix and its gradient D F per
style layer. Elementwise work (ReLU, pooling, losses, optimiser) is counted in bytes, not FLOPs.
Bytes are the fewest a perfect implementation moves: every activation written once and read
once in the forward, every gradient written once and read once in the backward, weights read
once per pass, masks/activations the backward needs read once.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from stylegrad.model.vgg import deepest, layer_specs


def iteration_cost(model: str, content_layers: Sequence[str], style_layers: Sequence[str], height: int,
                   width: int, batch: int = 1, act_bytes: int = 4, gram_symmetric: bool = False,
                   terms: Optional[Sequence] = None) -> Dict[str, float]:
    """``terms``: the objective (``stylegrad.terms.build``), whose ``flops`` are summed as
    ``style_flops`` (the terms' own work); default: the unguided style term at ``style_layers``."""
    layers = list(content_layers) + list(style_layers)
    last = deepest(model, layers)
    h, w = height, width
    conv_f = 0.0
    act_elems = 0.0        # elements of every activation tensor produced in the forward
    weight_elems = 0.0
    shapes: Dict[str, Tuple[int, int]] = {}     # layer -> (channels, positions), as far as the forward goes
    for s in layer_specs(model):
        if s.kind == "conv":
            conv_f += 2.0 * s.in_channels * s.out_channels * 9 * h * w
            weight_elems += s.in_channels * s.out_channels * 9 + s.out_channels
            act_elems += s.out_channels * h * w
        elif s.kind == "pool":
            if h < 2 or w < 2:
                break
            h, w = h // 2, w // 2
            act_elems += s.out_channels * h * w
        shapes[s.name] = (s.out_channels, h * w)
        if s.name == last:
            break
    if terms is None:        # G = F F^T and D F per style layer
        from stylegrad.terms.style import gram_flops

        style_f = gram_flops(shapes, style_layers, 1, gram_symmetric)
    else:
        style_f = sum(t.flops(shapes, 1, gram_symmetric) for t in terms)
    fwd, bwd = conv_f * batch, conv_f * batch
    bytes_fwd = (2 * act_elems * batch) * act_bytes + weight_elems * act_bytes
    bytes_bwd = (2 * act_elems * batch) * act_bytes + weight_elems * act_bytes + act_elems * batch * act_bytes
    return {"forward_flops": fwd, "backward_flops": bwd, "style_flops": style_f * batch,
            "total_flops": fwd + bwd + style_f * batch, "min_bytes": bytes_fwd + bytes_bwd}
