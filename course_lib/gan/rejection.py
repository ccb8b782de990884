"""Discriminator rejection sampling (DRS, Azadi et al. 2019): the discriminator corrects G at sampling time.

Section 1 of notebook 04 derives the optimal discriminator D*(x) = p_data(x) / (p_data(x) + p_g(x)).
Its logit is the log density ratio::

    l*(x) = log D*(x) - log(1 - D*(x)) = log p_data(x) - log p_g(x).

So D* turns samples of p_g into samples of p_data by rejection sampling: draw x ~ p_g and accept it
with probability a(x) = exp(l*(x) - M), where M >= max_x l*(x). Then

    P(x and accepted) = p_g(x) exp(l*(x) - M) = p_data(x) e^{-M},

so the accepted x follow p_data, and a fraction e^{-M} of the draws is accepted.

A trained D only estimates the ratio, and M is unknown. DRS estimates M as the largest logit on a
burn-in batch of G's samples. Logits above it are clamped to M. DRS also writes the acceptance
probability as a sigmoid with a shift gamma::

    a(x) = sigmoid(F(x) - gamma),   F(x) = l(x) - M - log(1 - exp(l(x) - M - eps)).

At gamma = 0 this is exactly exp(l - M): with r = exp(l - M), sigmoid(F) = (r / (1 - r)) / (1 + r / (1 - r)) = r,
up to the eps that keeps F finite at l = M. gamma > 0 accepts fewer samples, and only those D rates
highest. Azadi et al. set gamma to a high quantile of F (their 95th percentile). ``gamma_quantile``
does the same, on the burn-in batch.

A conditional GAN uses the same rule per class, with D(x | y)'s logit (``num_classes``).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["acceptance_probability", "drs_score", "rejection_sample"]


def drs_score(logits: Tensor, max_logit: float | Tensor, eps: float = 1e-6) -> Tensor:
    """F = l - M - log(1 - exp(l - M - eps)), with l clamped to <= M: logits [N] -> [N]."""
    shifted = (logits - max_logit).clamp(max=0.0)                        # l - M <= 0
    return shifted - torch.log(-torch.expm1(shifted - eps))              # log(1 - exp(.)) without cancellation


def acceptance_probability(logits: Tensor, max_logit: float | Tensor, gamma: float | Tensor = 0.0,
                           eps: float = 1e-6) -> Tensor:
    """a = sigmoid(F - gamma) (``drs_score``): logits [N] -> acceptance probabilities [N] in (0, 1).

    ``gamma = 0`` gives exp(l - M), the exact rejection sampler when l is the log ratio log p_data / p_g.
    """
    return torch.sigmoid(drs_score(logits, max_logit, eps) - gamma)


def _draw(gan, n: int, num_classes: int | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """n draws of G, with labels y uniform over num_classes for a conditional GAN: (x, y or None, logits [n])."""
    device = next(gan.G.parameters()).device
    y = None if num_classes is None else torch.randint(num_classes, (n,), device=device)
    x = gan.sample(n, y)
    return x, y, gan.D(x, y).reshape(n).float()


@torch.no_grad()
def rejection_sample(gan, n: int, *, num_classes: int | None = None, gamma_quantile: float | None = None,
                     burn_in: int = 10_000, batch_size: int = 1000, max_draws: int | None = None,
                     generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """n samples of a ``GAN`` kept by DRS: (x [n, ...] in G's output range, info).

    ``burn_in`` draws of G estimate M (their largest logit) and, with ``gamma_quantile``, gamma (that
    quantile of F over them; None: gamma = 0, plain rejection sampling). Then batches of ``batch_size``
    are drawn and each x is kept with probability a(x), until n are kept. ``info`` holds M, gamma,
    the acceptance rate and ``y``, the kept samples' labels. The burn-in draws are not reused as
    samples, so the kept ones are independent of the estimates. Call it with the GAN in eval mode
    (batch norm with running statistics). ``max_draws`` (default 1000 n) bounds the work. A sampler
    that accepts too little stops with an error.

    A conditional GAN (``num_classes``) draws y uniformly and keeps (x, y) with D(x | y)'s logit.
    One M for all classes keeps the classes' shares: with the exact ratio,
    sum_x p_g(x | y) exp(l*(x, y) - M) = e^{-M} for every y.
    """
    if n < 1 or burn_in < 1 or batch_size < 1:
        raise ValueError(f"n, burn_in and batch_size must be positive, got n={n}, burn_in={burn_in}, "
                         f"batch_size={batch_size}")
    if gamma_quantile is not None and not 0.0 <= gamma_quantile < 1.0:
        raise ValueError(f"gamma_quantile must be in [0, 1) (Azadi et al. use 0.95) or None, got {gamma_quantile}")
    burn = torch.cat([_draw(gan, min(batch_size, burn_in - i), num_classes)[2] for i in range(0, burn_in, batch_size)])
    max_logit = burn.max()
    gamma = torch.tensor(0.0)
    if gamma_quantile is not None:
        gamma = torch.quantile(drs_score(burn, max_logit), gamma_quantile)
    max_draws = max_draws or 1000 * n
    kept, kept_y, n_kept, drawn = [], [], 0, 0
    while n_kept < n:
        if drawn >= max_draws:
            raise RuntimeError(f"rejection sampling kept {n_kept} of {drawn} draws ({n_kept / drawn:.2%}), short of "
                               f"n = {n}: lower gamma_quantile (or use None), or raise max_draws")
        x, y, logits = _draw(gan, batch_size, num_classes)
        a = acceptance_probability(logits, max_logit, gamma)
        keep = torch.rand(len(a), generator=generator, device=a.device if generator is None else generator.device) < a
        keep = keep.to(x.device)
        kept.append(x[keep])
        kept_y.append(None if y is None else y[keep])
        n_kept, drawn = n_kept + int(keep.sum()), drawn + batch_size
    info = {"max_logit": float(max_logit), "gamma": float(gamma), "acceptance_rate": n_kept / drawn, "draws": drawn,
            "y": None if num_classes is None else torch.cat(kept_y)[:n]}
    return torch.cat(kept)[:n], info
