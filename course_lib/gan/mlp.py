"""Fully connected generator and discriminator for 2D toy sets and small images, and their zoo builder.

The 2D sections of notebook 04 (mode collapse on a ring of Gaussians) train these in seconds.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from course_lib.gan.model import GAN

__all__ = ["MLPGenerator", "MLPDiscriminator", "MLPGAN", "build_mlp_gan"]


class MLPGenerator(nn.Module):
    """z [N, latent_dim] -> x [N, *data_shape]; ends in tanh for images (data in [-1, 1])."""

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int, hidden: int):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, math.prod(self.data_shape)),
                                 nn.Tanh() if len(self.data_shape) == 3 else nn.Identity())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(z).view(len(z), *self.data_shape)


class MLPDiscriminator(nn.Module):
    """x [N, *data_shape] -> logit [N, 1]."""

    def __init__(self, data_shape: tuple[int, ...], hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x)


class MLPGAN(GAN):
    """A GAN of two MLPs (unconditional). Options as in ``GAN``: k, generator_loss, betas."""

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int = 16, hidden: int = 128, **options):
        super().__init__(MLPGenerator(data_shape, latent_dim, hidden), MLPDiscriminator(data_shape, hidden),
                         latent_dim, **options)


def build_mlp_gan(image_shape: tuple[int, ...], num_classes: int | None = None, **options) -> MLPGAN:
    """Model-zoo builder (``--model gan_mlp``): an unconditional MLPGAN for data of shape ``image_shape``."""
    if num_classes is not None:
        raise ValueError("gan_mlp is unconditional: train it without --conditional (or use --model dcgan)")
    return MLPGAN(image_shape, **options)
