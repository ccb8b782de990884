"""The GAN losses of the lecture, written on discriminator logits l (D(x) = sigmoid(l)).

The value function of the two-player game (Goodfellow et al. 2014, eq. 1)::

    V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]      D maximises V, G minimises it

With -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l), every loss below is
a mean of softplus terms: exact in float32 where log(sigmoid(l)) underflows for large |l|.
All functions take logits of shape [N] or [N, 1] and return a scalar.

The hinge losses (Lim & Ye 2017; used with spectral normalisation by Miyato et al. 2018 and by
BigGAN) are not a rewriting of V: D minimises a margin loss, and its pointwise optimum is
l*(x) = sign(p_data(x) - p_g(x)) (tested): only the sign of the minimax D*'s logit log(p_data / p_g).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["discriminator_loss", "generator_loss_saturating", "generator_loss_non_saturating",
           "discriminator_loss_hinge", "generator_loss_hinge"]


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """-V(D, G): -E log D(x) - E log(1 - D(G(z))) = E softplus(-l_real) + E softplus(l_fake)."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def generator_loss_saturating(logits_fake: Tensor) -> Tensor:
    """The minimax generator loss E log(1 - D(G(z))) = -E softplus(l_fake).

    Its gradient vanishes when D confidently rejects the fakes (l_fake -> -inf), which is the
    situation early in training: the "saturation" the lecture warns about.
    """
    return -F.softplus(logits_fake).mean()


def generator_loss_non_saturating(logits_fake: Tensor) -> Tensor:
    """The heuristic generator loss -E log D(G(z)) = E softplus(-l_fake): same fixed point, strong
    gradients when D rejects the fakes (Goodfellow et al. 2014, section 3)."""
    return F.softplus(-logits_fake).mean()


def discriminator_loss_hinge(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The hinge loss of D: E relu(1 - l_real) + E relu(1 + l_fake). It is zero once real logits exceed 1
    and fake ones fall below -1, so D stops pushing samples it already separates by the margin."""
    return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()


def generator_loss_hinge(logits_fake: Tensor) -> Tensor:
    """The hinge loss of G, -E l_fake: the generator raises D's logit on its samples; the gradient is -1/N per sample at any l,
    so it never saturates."""
    return -logits_fake.mean()
