"""``MLPGAN``: a small fully connected GAN for 2D toy sets and 28x28 digits, trained by Algorithm 1.

It is the two-player shape of the training contract (``course_lib.contract``): no ``loss``
method, two optimizers ``{"D", "G"}``, and a ``train_step`` that updates D on every step and G on
every k-th, so k discriminator steps (each on a fresh batch) precede one generator step, as in
Algorithm 1 of Goodfellow et al. (2014). ``fit`` logs ``d_loss`` every step and ``g_loss`` every
k-th, each averaged over the steps that logged it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.gan.losses import discriminator_loss, generator_loss_non_saturating, generator_loss_saturating

__all__ = ["MLPGAN", "build_mlp_gan"]

GENERATOR_LOSSES = {"non_saturating": generator_loss_non_saturating, "saturating": generator_loss_saturating}


class MLPGAN(GenerativeModel):
    """Generator G: z ~ N(0, I_latent_dim) -> x, and discriminator D: x -> logit, both MLPs.

    Args:
        data_shape: shape of one example: (2,) for a 2D toy set, (C, H, W) for images in [-1, 1]
            (the generator then ends in tanh).
        latent_dim: dimension of z.
        hidden: width of the hidden layers.
        k: discriminator steps per generator step (Algorithm 1's k).
        generator_loss: "non_saturating" (-log D(G(z)), the default) or "saturating" (log(1 - D(G(z)))).
    """

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int = 16, hidden: int = 128, k: int = 1,
                 generator_loss: str = "non_saturating"):
        super().__init__()
        if generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {sorted(GENERATOR_LOSSES)}, got {generator_loss!r}")
        if k < 1:
            raise ValueError(f"k (discriminator steps per generator step) must be >= 1, got {k}")
        self.data_shape, self.latent_dim, self.k = tuple(data_shape), latent_dim, k
        self.generator_loss = GENERATOR_LOSSES[generator_loss]
        dim = math.prod(self.data_shape)
        self.G = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                               nn.LeakyReLU(0.2), nn.Linear(hidden, dim),
                               nn.Tanh() if len(self.data_shape) == 3 else nn.Identity())
        self.D = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                               nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def generate(self, z: Tensor) -> Tensor:
        """G(z): [N, latent_dim] -> [N, *data_shape]."""
        return self.G(z).view(len(z), *self.data_shape)

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Adam with beta1 = 0.5 for both players (Radford et al. 2016 found 0.9 unstable)."""
        return {"D": torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999)),
                "G": torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))}

    def train_step(self, x: Tensor, y: Tensor | None, step: int, update) -> dict[str, Tensor]:
        """One discriminator step on the batch x; on every k-th step also one generator step."""
        n = len(x)
        fake = self.generate(torch.randn(n, self.latent_dim, device=x.device)).detach()
        d_loss = discriminator_loss(self.D(x), self.D(fake))
        terms = {"d_loss": d_loss, "d_grad_norm": update(d_loss, "D")}
        if step % self.k == 0:
            g_loss = self.generator_loss(self.D(self.generate(torch.randn(n, self.latent_dim, device=x.device))))
            terms.update(g_loss=g_loss, g_grad_norm=update(g_loss, "G"))
        return terms

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n samples G(z), z ~ N(0, I), on the model's device."""
        device = next(self.parameters()).device
        return self.generate(torch.randn(n, self.latent_dim, device=device))


def build_mlp_gan(image_shape: tuple[int, ...], num_classes: int | None = None, **options) -> MLPGAN:
    """Model-zoo builder (``--model gan_mlp``): an unconditional MLPGAN for data of shape ``image_shape``."""
    if num_classes is not None:
        raise ValueError("gan_mlp is unconditional: train it without --conditional")
    return MLPGAN(image_shape, **options)
