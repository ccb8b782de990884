"""``GAN``: a generator G and a discriminator D trained by Algorithm 1 through the training contract.

Algorithm 1 of Goodfellow et al. (2014), as the lectures give it::

    for each training iteration:
        for k steps:  sample a minibatch x of data and z of noise; ascend  grad_D V(D, G)
        sample a minibatch z of noise;                             descend grad_G V(D, G)

Here one ``fit`` step is one discriminator step on a fresh batch; every k-th step also takes the
generator step. ``fit`` therefore logs ``d_loss`` on every step and ``g_loss`` on every k-th, each
averaged over the steps that logged it, and checkpoints both optimizers under "D" and "G".

Any pair of networks fits: ``G(z, y) -> x`` and ``D(x, y) -> logits`` (one logit per image, or a
map of logits per patch for a PatchGAN; ``y`` is None for an unconditional GAN).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.gan.losses import (discriminator_loss, discriminator_loss_hinge, generator_loss_hinge,
                                   generator_loss_non_saturating, generator_loss_saturating)

__all__ = ["GAN", "GENERATOR_LOSSES", "DISCRIMINATOR_LOSSES", "truncated_normal"]

GENERATOR_LOSSES = {"non_saturating": generator_loss_non_saturating, "saturating": generator_loss_saturating,
                    "hinge": generator_loss_hinge}
DISCRIMINATOR_LOSSES = {"minimax": discriminator_loss, "hinge": discriminator_loss_hinge}


def truncated_normal(shape: tuple[int, ...], truncation: float | None, device=None) -> Tensor:
    """z ~ N(0, I), each coordinate redrawn until |z_i| <= truncation (BigGAN's truncation trick,
    Brock et al. 2019); ``truncation=None`` is the plain normal. Smaller thresholds trade diversity
    for typical, cleaner samples."""
    z = torch.randn(shape, device=device)
    if truncation is None:
        return z
    if truncation <= 0:
        raise ValueError(f"truncation must be positive (e.g. 0.5 ... 2), got {truncation}")
    while (outside := z.abs() > truncation).any():
        z = torch.where(outside, torch.randn(shape, device=device), z)
    return z


class GAN(GenerativeModel):
    """Generator G and discriminator D with the lecture's losses.

    Args:
        G: module called as ``G(z, y)``, z of shape [N, latent_dim].
        D: module called as ``D(x, y)``, returning logits ([N], [N, 1] or a patch map [N, 1, h, w]).
        latent_dim: dimension of z.
        k: discriminator steps per generator step (Algorithm 1's k).
        generator_loss: "non_saturating" (-log D(G(z)), the default), "saturating" (log(1 - D(G(z))))
            or "hinge" (-l(G(z)), to go with the hinge discriminator loss).
        discriminator_loss: "minimax" (-V, the default) or "hinge" (E relu(1 - l_real) + E relu(1 + l_fake)).
        betas: Adam's (beta1, beta2) for both players; DCGAN's (0.5, 0.999) by default
            (Radford et al. 2016 found beta1 = 0.9 unstable).
        augment: a differentiable random transformation T applied to every image D sees in training,
            real and fake, in both steps (DiffAugment, ``course_lib.gan.augment``); None: none.
    """

    def __init__(self, G: nn.Module, D: nn.Module, latent_dim: int, *, k: int = 1,
                 generator_loss: str = "non_saturating", discriminator_loss: str = "minimax",
                 betas: tuple[float, float] = (0.5, 0.999), augment: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        if generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {sorted(GENERATOR_LOSSES)}, got {generator_loss!r}")
        if discriminator_loss not in DISCRIMINATOR_LOSSES:
            raise ValueError(f"discriminator_loss must be one of {sorted(DISCRIMINATOR_LOSSES)}, "
                             f"got {discriminator_loss!r}")
        if k < 1:
            raise ValueError(f"k (discriminator steps per generator step) must be >= 1, got {k}")
        self.G, self.D, self.latent_dim, self.k, self.betas = G, D, latent_dim, k, tuple(betas)
        self.generator_loss = GENERATOR_LOSSES[generator_loss]
        self.discriminator_loss = DISCRIMINATOR_LOSSES[discriminator_loss]
        self.augment = augment

    def seen(self, x: Tensor) -> Tensor:
        """What D is shown of images x in a training step: T(x) with ``augment``, else x."""
        return x if self.augment is None else self.augment(x)

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"D": torch.optim.Adam(self.D.parameters(), lr=lr, betas=self.betas),
                "G": torch.optim.Adam(self.G.parameters(), lr=lr, betas=self.betas)}

    def train_step(self, x: Tensor, y: Tensor | None, step: int, update) -> dict[str, Tensor]:
        """One discriminator step on the batch (x, y); on every k-th step also one generator step."""
        z = torch.randn(len(x), self.latent_dim, device=x.device)
        fake = self.G(z, y).detach()  # no gradient into G during D's step
        d_loss = self.discriminator_loss(self.D(self.seen(x), y), self.D(self.seen(fake), y))
        terms = {"d_loss": d_loss, "d_grad_norm": update(d_loss, "D")}
        if step % self.k == 0:
            z = torch.randn(len(x), self.latent_dim, device=x.device)  # a fresh minibatch of noise
            g_loss = self.generator_loss(self.D(self.seen(self.G(z, y)), y))  # D's gradients from this are zeroed before D's next step
            terms.update(g_loss=g_loss, g_grad_norm=update(g_loss, "G"))
        return terms

    @torch.no_grad()
    def standing_statistics(self, num_classes: int | None = None, n_batches: int = 16,
                            batch_size: int = 256) -> "GAN":
        """Re-estimate G's batch-norm statistics for G's present weights ("standing statistics", Brock et al. 2019).

        In training, each BatchNorm keeps running_mean <- 0.9 running_mean + 0.1 batch mean: a trail of
        statistics of earlier weights. For an EMA copy of G they belong to other weights altogether.
        Here they are reset and replaced by the plain average over ``n_batches`` batches of G(z, y),
        z ~ N(0, I) (y uniform over ``num_classes`` for a conditional G); momentum is restored after.
        Returns self with G in eval mode, so ``sample`` then uses these statistics.
        """
        norms = [m for m in self.G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        device = next(self.G.parameters()).device
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # running statistics = cumulative average over the batches below
        self.G.train()
        for _ in range(n_batches):
            y = None if num_classes is None else torch.randint(num_classes, (batch_size,), device=device)
            self.G(torch.randn(batch_size, self.latent_dim, device=device), y)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        self.G.eval()
        return self

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, truncation: float | None = None) -> Tensor:
        """n samples G(z, y), z ~ N(0, I) (truncated to |z_i| <= truncation if given), on the model's device."""
        device = next(self.G.parameters()).device
        return self.G(truncated_normal((n, self.latent_dim), truncation, device), y)
