"""Keeping the content's colours (``--original-colors``): Gatys, Bethge, Hertzmann and Shechtman,
"Preserving Color in Neural Artistic Style Transfer" (2016), section "Luminance-only transfer".

Colour space: ITU-R BT.601 full-range YCbCr (the JPEG/JFIF matrix, Pillow's ``YCbCr``):
    Y = 0.299 R + 0.587 G + 0.114 B,   Cb = 0.5 + 0.564 (B - Y),   Cr = 0.5 + 0.713 (R - Y).
neural-style (Lua) swaps channels in YUV and neural-style-pt in Pillow's YCbCr; both keep the
output's Y and the content's (B - Y, R - Y) up to a per-axis factor, so in exact arithmetic all
three give the same image.

``postprocess`` (neural-style's ``-original_colors 1``): the output's luminance with the content's
chroma, after optimisation. ``luminance`` (the paper's luminance-only transfer): optimise on
luminance images (content and styles replaced by their luminance in all three channels, each
style's luminance shifted and scaled to the content's mean and standard deviation), then the
same recombination with the content's chroma.

Where we differ: neural-style converts back to RGB and clips each channel, which changes the
chroma of saturated pixels. We clamp the *luminance* to the range in which the content's chroma
fits the RGB cube (never empty: the content's own luminance is in it), so the output's chroma is
the content's exactly (up to the 8-bit rounding of the written file). The paper does not clip
the matched style luminance; we clamp it to [0, 1], the range of every image the engine feeds.
"""
from __future__ import annotations

import torch

KR, KG, KB = 0.299, 0.587, 0.114
FLAT_STD = 1e-4   # a style luminance with less spread (1/40 of a grey level) is flat: it stays flat


def luma(x: torch.Tensor) -> torch.Tensor:
    """Y of RGB images (..., 3, H, W) -> (..., 1, H, W)."""
    r, g, b = x.unbind(-3)
    return (KR * r + KG * g + KB * b).unsqueeze(-3)


def with_content_chroma(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The output's luminance with the content's chroma, in the RGB cube: (..., 3, H, W) each.

    RGB = Y' + (content - Y_content) per channel, with Y' the output's luminance clamped to
    [Y_c - min(content), Y_c + 1 - max(content)], the luminances at which the content's chroma
    stays in [0, 1] on every channel (see the module docstring).
    """
    content = content.to(output.device, torch.float32)
    out = output.float().clamp(0, 1)
    yc = luma(content)
    offset = content - yc                                       # the content's chroma, in RGB
    lo = yc - content.amin(dim=-3, keepdim=True)
    hi = yc + 1.0 - content.amax(dim=-3, keepdim=True)
    y = torch.minimum(torch.maximum(luma(out), lo), hi)
    return (y + offset).clamp(0, 1)   # within rounding of [0, 1] already; the clamp only trims that


def to_luminance(x: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) -> its luminance in all three channels (a grey RGB image)."""
    return luma(x).expand_as(x).contiguous()


def matched_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """A style image (3, H, W) as a grey image whose luminance has the content's mean and
    standard deviation (the paper's luminance matching), clamped to [0, 1]."""
    ys, yc = luma(style.float()), luma(content.float().to(style.device))
    std_s = ys.std(unbiased=False)
    scale = yc.std(unbiased=False) / std_s if std_s > FLAT_STD else torch.zeros(())
    y = ((ys - ys.mean()) * scale + yc.mean()).clamp(0, 1)
    return y.expand(3, -1, -1).contiguous()


