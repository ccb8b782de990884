"""Differentiable augmentation for GANs on little data (DiffAugment, Zhao et al. 2020).

With 5,000 training digits, D sees each real image dozens of times in a few minutes and starts to
memorise them; its verdict then stops telling G anything general. Augmenting only the real images
would teach G to draw augmented digits. DiffAugment applies the same random transformation T to
everything D sees, real and fake, in both players' steps:

    D's loss on  D(T(x))  and  D(T(G(z)));   G's loss on  D(T(G(z))),

and because T is differentiable, G's gradient passes through it. Two transformations for digits
(images in [-1, 1], background -1), each drawn anew for every image of every call:

* ``translate``: shift by whole pixels, up to ``max_shift`` of the size each way, background filling in;
* ``cutout``: erase one square of side ``size`` x the image size (set it to the background).

Measured here (``GAN_AUGMENT=1 GAN_SELF_CONDITION=50 python -m benchmarks.run --suite gan --steps 2000
--threads 1``, record gan_mnist_cpu_full_20261202T110156): at this short budget it does not help.
The conditional DCGAN fell from 87% confident samples at 2.1x the real classifier-FID floor to 77% at
5.5x, and the self-conditioned one stayed at 71%. In 2,000 steps D has not yet memorised the 5,000
digits; DiffAugment pays off in longer runs, where it does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cutout", "diff_augment", "translate"]

BACKGROUND = -1.0  # the value of an empty pixel of an image in [-1, 1]


def translate(x: Tensor, max_shift: float = 0.125, shifts: Tensor | None = None) -> Tensor:
    """x [N, C, H, W] shifted by (dy, dx) pixels per image: out[n, :, i, j] = x[n, :, i - dy, j - dx]
    (background outside). ``shifts`` [N, 2] long fixes (dy, dx); by default each is uniform in
    -p..p with p = round(max_shift * H)."""
    N, C, H, W = x.shape
    p = max(1, round(max_shift * H))
    if shifts is None:
        shifts = torch.randint(-p, p + 1, (N, 2), device=x.device)
    p = max(p, int(shifts.abs().max()))
    padded = F.pad(x, (p, p, p, p), value=BACKGROUND).permute(0, 2, 3, 1)   # [N, H + 2p, W + 2p, C]
    rows = torch.arange(H, device=x.device)[None, :, None] + p - shifts[:, 0, None, None]  # [N, H, 1]
    cols = torch.arange(W, device=x.device)[None, None, :] + p - shifts[:, 1, None, None]  # [N, 1, W]
    return padded[torch.arange(N, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, size: float = 0.5, centres: Tensor | None = None) -> Tensor:
    """x [N, C, H, W] with one square of side round(size * H) per image set to the background.
    ``centres`` [N, 2] long fixes the squares' centres (rows, columns); by default uniform over the image."""
    N, C, H, W = x.shape
    half = round(size * H) / 2
    if centres is None:
        centres = torch.stack([torch.randint(H, (N,), device=x.device), torch.randint(W, (N,), device=x.device)], 1)
    i = torch.arange(H, device=x.device)[None, :, None] - centres[:, 0, None, None]  # [N, H, 1]
    j = torch.arange(W, device=x.device)[None, None, :] - centres[:, 1, None, None]  # [N, 1, W]
    erase = ((i + 0.5).abs() <= half) & ((j + 0.5).abs() <= half)                    # [N, H, W]
    return torch.where(erase[:, None], torch.full_like(x, BACKGROUND), x)


def diff_augment(x: Tensor) -> Tensor:
    """T(x): ``translate`` then ``cutout``, fresh randomness per image (DiffAugment's policy for digits)."""
    return cutout(translate(x))
