"""Small probability helpers that every model family shares.

All functions work elementwise on tensors of any shape (broadcasting like ``+``) and return
values in nats; sum over the data dimensions yourself (``course_lib.nn.sum_flat``).

* ``gaussian_kl``: KL(N(mu_1, sigma_1^2) || N(mu_2, sigma_2^2)) in closed form (VAE, diffusion).
* ``standard_normal_cdf``: Phi(x), exact via erf.
* ``discretized_gaussian_log_likelihood``: log P(x) of 8-bit data scaled to [-1, 1] under a
  Gaussian whose mass is collected into the 256 bins around the pixel values (the DDPM
  decoder p_theta(x_0 | x_1); notebook 06, section "The variational bound").
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gaussian_kl", "standard_normal_cdf", "discretized_gaussian_log_likelihood"]


def gaussian_kl(mean1: Tensor, log_var1: Tensor, mean2: Tensor, log_var2: Tensor) -> Tensor:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))), elementwise, in nats.

        KL = 1/2 [ log(sigma_2^2 / sigma_1^2) + (sigma_1^2 + (mu_1 - mu_2)^2) / sigma_2^2 - 1 ]

    For diagonal Gaussians in D dimensions the KL is the sum of the elementwise values.
    Arguments broadcast against each other (a scalar variance is fine).
    """
    mean1, log_var1, mean2, log_var2 = (torch.as_tensor(a) for a in (mean1, log_var1, mean2, log_var2))
    return 0.5 * (
        log_var2 - log_var1
        + torch.exp(log_var1 - log_var2)
        + (mean1 - mean2) ** 2 * torch.exp(-log_var2)
        - 1.0
    )


def standard_normal_cdf(x: Tensor) -> Tensor:
    """Phi(x) = P(Z <= x) for Z ~ N(0, 1), computed exactly as 1/2 (1 + erf(x / sqrt(2)))."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _log_normal_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """log P(lower < Z <= upper) for Z ~ N(0, 1), stable in both tails.

    Phi(upper) - Phi(lower) loses all digits when both ends lie far in the upper tail
    (1 - 1e-12 minus 1 - 2e-12); by symmetry it equals Phi(-lower) - Phi(-upper), which is
    accurate there. We use the form whose terms are smaller than 1/2. In log space:
    log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))).
    """
    flip = lower > 0  # both ends in the upper half: reflect to the lower tail
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b).clamp(max=1.0 - 1e-12))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_var: Tensor, bins: int = 256) -> Tensor:
    """log P(x) for data on the grid {-1, -1 + 2/(bins-1), ..., 1} (8-bit images scaled to [-1, 1]).

    The continuous density N(mean, exp(log_var)) is integrated over the bin of width
    delta = 2 / (bins - 1) around each pixel value; the two edge bins extend to -inf and +inf,
    so the probabilities of all ``bins`` values sum to exactly 1 (Ho et al. 2020, eq. 13):

        P(x) = Phi((x + delta/2 - mean) / sigma) - Phi((x - delta/2 - mean) / sigma)
        P(-1) = Phi((-1 + delta/2 - mean) / sigma),   P(1) = 1 - Phi((1 - delta/2 - mean) / sigma)

    Shapes: ``x``, ``mean`` broadcastable, e.g. [N, C, H, W]; returns log P elementwise (nats).
    """
    if torch.is_floating_point(x) is False:
        raise TypeError(
            f"x has dtype {x.dtype}; pass pixel values scaled to [-1, 1] as floats "
            "(course_lib.data.to_signed converts uint8 images)."
        )
    if x.numel() and (x.min() < -1.0 - 1e-4 or x.max() > 1.0 + 1e-4):
        raise ValueError(f"x must lie in [-1, 1] (got min {x.min().item():.3f}, max {x.max().item():.3f}).")
    half_bin = 1.0 / (bins - 1)
    inv_sigma = torch.exp(-0.5 * log_var)
    lower = (x - half_bin - mean) * inv_sigma  # standardised bin edges
    upper = (x + half_bin - mean) * inv_sigma
    lower = torch.where(x < -1.0 + half_bin, torch.full_like(lower, -math.inf), lower)  # edge bin -> -inf
    upper = torch.where(x > 1.0 - half_bin, torch.full_like(upper, math.inf), upper)  # edge bin -> +inf
    return _log_normal_mass(lower, upper)
