"""The discretized logistic mixture: PixelCNN++'s output distribution (Salimans et al. 2017), notebook 02.

A K-way softmax treats the levels 0..K-1 as unrelated classes: seeing level 200 teaches it nothing
about level 201. The mixture puts a continuous density on the pixel value and integrates it over
each level's bin, so neighbouring levels share what they learn, with 3M numbers per channel instead
of K. Level k sits at x_k = 2k / (K - 1) - 1 in [-1, 1], its bin is [x_k - h, x_k + h] with
h = 1 / (K - 1), and the two end bins stretch to -inf and +inf::

    P(k) = sum_m pi_m [ sigma((x_k + h - mu_m) / s_m) - sigma((x_k - h - mu_m) / s_m) ],

sigma the logistic CDF (the sigmoid); the first bin drops the second term, the last bin replaces
the first by 1. The levels' probabilities sum to 1 by telescoping. For numbers, with a = upper and
b = lower edge in units of s (a - b = 2h / s):

    sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - exp(-(a - b))),

so log P_m(k) = log sigma(a) + log sigma(-b) + log(1 - exp(-2h / s)), each term finite and exact
(the first bin keeps only the first term, the last bin only the second).

Parameters of one channel, as the net outputs them: [..., 3M] = (mixture logits, mu, log s).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["logistic_mixture_log_prob", "logistic_mixture_table", "split_mixture"]

LOG_SCALE_MIN = -7.0  # s >= e^-7 (PixelCNN++'s bound): keeps 1 - exp(-2h / s) away from 0 / 0


def split_mixture(params: Tensor, dim: int = -1) -> tuple[Tensor, Tensor, Tensor]:
    """[..., 3M, ...] -> log pi (log-softmax of the logits), mu, log s (clamped below), each [..., M, ...]."""
    if params.shape[dim] % 3:
        raise ValueError(f"a logistic mixture needs 3M parameters along dim {dim}, got {params.shape[dim]}")
    logits, mu, log_s = params.chunk(3, dim=dim)
    return logits.log_softmax(dim), mu, log_s.clamp(min=LOG_SCALE_MIN)


def _log_bin_probs(levels: Tensor, mu: Tensor, log_s: Tensor, K: int) -> Tensor:
    """log P_m(k) of one logistic(mu, s) component per element; all arguments broadcast together."""
    h = 1.0 / (K - 1)
    x = levels.to(mu.dtype) * (2 * h) - 1.0
    inv_s = torch.exp(-log_s)
    a, b = (x + h - mu) * inv_s, (x - h - mu) * inv_s    # the bin's upper and lower edge, in units of s
    first, last = levels == 0, levels == K - 1
    log_gap = torch.log(-torch.expm1(-2 * h * inv_s))     # log(1 - exp(-(a - b)))
    return (torch.where(last, 0.0, F.logsigmoid(a)) + torch.where(first, 0.0, F.logsigmoid(-b))
            + torch.where(first | last, 0.0, log_gap))


def logistic_mixture_log_prob(params: Tensor, levels: Tensor, K: int) -> Tensor:
    """log P(levels) under the mixture: params [N, C, 3M, H, W], levels int64 [N, C, H, W] -> [N, C, H, W]."""
    log_pi, mu, log_s = split_mixture(params, dim=2)
    return torch.logsumexp(log_pi + _log_bin_probs(levels.unsqueeze(2), mu, log_s, K), dim=2)


def logistic_mixture_table(params: Tensor, K: int) -> Tensor:
    """log P(k) of every level k: params [..., 3M] -> [..., K] (a log-probability table; for sampling)."""
    log_pi, mu, log_s = split_mixture(params.unsqueeze(-2))            # [..., 1, M]
    levels = torch.arange(K, device=params.device)[:, None]            # [K, 1]
    return torch.logsumexp(log_pi + _log_bin_probs(levels, mu, log_s, K), dim=-1)
