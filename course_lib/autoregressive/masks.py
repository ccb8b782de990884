"""Masked convolutions: the autoregressive property built into a CNN (notebook 02, section "Masks").

Pixels are ordered row by row (raster order), and within a pixel the colour channels R, G, B
(van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4). An output at pixel
t = (i, j) may depend only on pixels before t, and its channel group g only on the groups g' of
pixel t that come before g. A convolution keeps this if its kernel is multiplied by a 0/1 mask:

* spatial part, kernel position (r, s) relative to the centre (0, 0): allowed iff r < 0, or
  r = 0 and s < 0 (above, or left in the same row); the centre (0, 0) is decided by the groups:
* **type A** (first layer, sees the image itself): group g sees input groups g' < g at the centre;
* **type B** (later layers, see features): group g sees g' <= g at the centre.

With one channel group (grey images) type A masks the centre and type B keeps it. A 5x5 type A
mask (the lecture's grid)::

    1 1 1 1 1
    1 1 1 1 1
    1 1 0 0 0
    0 0 0 0 0
    0 0 0 0 0

Channels belong to groups in contiguous blocks: channel c of C_total is in group
floor(c * G / C_total) (``channel_groups``), so for RGB the first third of the features are "R".

The gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders") splits the raster mask into a **vertical** kernel (rows strictly above: type A; rows
above and the current row: type B, every column) and a **horizontal** 1 x (k//2 + 1) kernel (the
current row, columns left of and at the centre, the centre decided by the groups as above).
Their kernels are cropped to the allowed part instead of masking half of a k x k kernel, so no
multiplications are wasted on zeros; ``MaskedConv2d`` takes the padding that puts the centre in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskedConv2d", "centre_mask", "channel_groups", "horizontal_mask", "raster_mask", "vertical_mask"]


def channel_groups(channels: int, groups: int) -> Tensor:
    """Group of each channel, contiguous blocks: ``floor(c * groups / channels)`` -> int64 [channels]."""
    if channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} colour groups; "
                         f"use a multiple of {groups} channels")
    return torch.arange(channels) * groups // channels


def _groups(g: Tensor | int, channels: int, colour_groups: int) -> Tensor:
    return channel_groups(channels, colour_groups) if isinstance(g, int) else g


def centre_mask(mask_type: str, in_groups: Tensor, out_groups: Tensor) -> Tensor:
    """Which input channels an output channel sees at its own pixel: [C_out, C_in] of 0/1.

    Type A: out group g sees in groups g' < g; type B: g' <= g."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' (first layer) or 'B' (later layers), got {mask_type!r}")
    g_out, g_in = out_groups[:, None], in_groups[None, :]
    return (g_in < g_out if mask_type == "A" else g_in <= g_out).float()


def raster_mask(kernel_size: int, mask_type: str, in_channels: int, out_channels: int,
                colour_groups: int = 1, in_groups: Tensor | None = None, out_groups: Tensor | None = None) -> Tensor:
    """The PixelCNN mask of a k x k kernel: [C_out, C_in, k, k] of 0/1 (see the module docstring).

    ``in_groups`` / ``out_groups`` (int64 [C]) override the contiguous-block groups."""
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd (the centre is the current pixel), got {kernel_size}")
    g_in = in_groups if in_groups is not None else channel_groups(in_channels, colour_groups)
    g_out = out_groups if out_groups is not None else channel_groups(out_channels, colour_groups)
    k, c = kernel_size, kernel_size // 2
    mask = torch.zeros(out_channels, in_channels, k, k)
    mask[:, :, :c, :] = 1.0                                   # rows above the centre
    mask[:, :, c, :c] = 1.0                                   # left of the centre, same row
    mask[:, :, c, c] = centre_mask(mask_type, g_in, g_out)    # the centre: colour groups
    return mask


def vertical_mask(kernel_size: int, mask_type: str, in_channels: int, out_channels: int) -> Tensor:
    """Vertical-stack kernel of shape (k//2 + 1, k), its last row being the current one: [C_out, C_in, k//2+1, k].

    Type A zeroes the current row (the stack then never sees row i at any depth); type B keeps it."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    mask = torch.ones(out_channels, in_channels, kernel_size // 2 + 1, kernel_size)
    if mask_type == "A":
        mask[:, :, -1, :] = 0.0
    return mask


def horizontal_mask(kernel_size: int, mask_type: str, in_channels: int, out_channels: int,
                    colour_groups: int = 1, in_groups: Tensor | None = None, out_groups: Tensor | None = None) -> Tensor:
    """Horizontal-stack kernel of shape (1, k//2 + 1), its last column being the current pixel: [C_out, C_in, 1, k//2+1]."""
    g_in = in_groups if in_groups is not None else channel_groups(in_channels, colour_groups)
    g_out = out_groups if out_groups is not None else channel_groups(out_channels, colour_groups)
    mask = torch.ones(out_channels, in_channels, 1, kernel_size // 2 + 1)
    mask[:, :, 0, -1] = centre_mask(mask_type, g_in, g_out)
    return mask


class MaskedConv2d(nn.Conv2d):
    """``Conv2d`` whose weight is multiplied by a fixed 0/1 ``mask`` [C_out, C_in, kh, kw] at every call.

    ``padding`` = (left, right, top, bottom) zero padding, so that the output has the input's
    height and width [N, C_out, H, W]; the default centres a k x k kernel (k // 2 on every side).
    Masked weights get zero gradient, so they stay whatever they are, and never matter.
    """

    def __init__(self, mask: Tensor, padding: tuple[int, int, int, int] | None = None, dilation: int = 1,
                 bias: bool = True):
        out_channels, in_channels, kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=0, dilation=dilation, bias=bias)
        self.register_buffer("mask", mask.clone())
        if padding is None:
            padding = (kw // 2 * dilation, kw // 2 * dilation, kh // 2 * dilation, kh // 2 * dilation)
        self.pad = tuple(padding)

    def forward(self, x: Tensor) -> Tensor:  # [N, C_in, H, W] -> [N, C_out, H, W]
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias, dilation=self.dilation)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad(l, r, t, b)={self.pad}"
