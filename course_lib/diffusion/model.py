"""``build_ddpm``: a ready-to-train DDPM (U-Net eps_theta + GaussianDiffusion), for notebooks and the CLI."""
from __future__ import annotations

from course_lib.diffusion.gaussian_diffusion import GaussianDiffusion
from course_lib.diffusion.unet import UNet, UNetConfig

__all__ = ["build_ddpm"]


def build_ddpm(image_shape: tuple[int, int, int], num_classes: int | None = None, *, T: int = 1000,
               schedule: str = "linear", variance: str = "beta", base_channels: int = 16,
               channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1, num_heads: int = 1,
               dropout: float = 0.0, label_dropout: float = 0.0) -> GaussianDiffusion:
    """A DDPM for images of shape (C, H, W) in [-1, 1], optionally class-conditional.

    T, schedule ("linear" | "cosine"), variance ("beta" | "beta_tilde") and label_dropout (the
    fraction of labels replaced by "no label" in training, for classifier-free guidance; needs
    num_classes) go to ``GaussianDiffusion``; the other options are ``UNetConfig`` fields. The defaults
    (base 16, mults (1, 2, 2), one block per level: 0.27M parameters) are sized for MNIST on a
    2-core CPU; notebook 06 (section 6) prints what a few minutes of training and 1000-step
    sampling cost there, and what the samples score. On a GPU use base 64 or more.
    The result has ``loss(x, y=None)`` and ``sample(n, y=None)`` for ``course_lib.train.fit``.
    """
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}.")
    config = UNetConfig(in_channels=image_shape[0], base_channels=base_channels,
                        channel_mults=tuple(channel_mults), num_res_blocks=num_res_blocks,
                        num_heads=num_heads, dropout=dropout, num_classes=num_classes)
    factor = 2 ** (len(config.channel_mults) - 1)
    if image_shape[1] % factor or image_shape[2] % factor:
        raise ValueError(f"image size {image_shape[1:]} is not divisible by {factor} "
                         "(= 2^(len(channel_mults) - 1)); "
                         "pad the images or pass fewer channel_mults.")
    if label_dropout and num_classes is None:
        raise ValueError("label_dropout needs a class-conditional network: pass num_classes=... as well.")
    return GaussianDiffusion(UNet(config), data_shape=image_shape, schedule=schedule, T=T, variance=variance,
                             label_dropout=label_dropout, null_label=num_classes)
