"""Bits per dimension: a negative log-likelihood in nats per example -> bits per pixel value.

The one convention of the course
--------------------------------
Images are 8-bit: each of the D = C*H*W values is an integer x in {0, ..., 255}. A model's
number is comparable across families only if it is the (bound on the) negative log-likelihood
of *those integers*, -log2 P(x_int) / D. Two kinds of models report NLLs:

(a) ``nll_of="discrete"``: the model gives a probability mass to the integers directly
    (PixelCNN's 256-way softmax, DDPM's discretized Gaussian decoder, a discretized logistic):
    bpd = nll / (D ln 2). No correction.

(b) A continuous density (flows, a VAE with a Gaussian decoder, ...) evaluated on *uniformly
    dequantized* data y = x_int + u, u ~ U[0, 1)^D, after a scaling z = y / 256 (data in [0, 1],
    ``nll_of="continuous_unit"``) or z = y / 128 - 1 (data in [-1, 1],
    ``nll_of="continuous_signed"``). By Jensen's inequality, -log P(x_int) <= E_u[-log p_Y(x_int + u)],
    so the density of y in *integer units* gives an upper bound on the discrete NLL. The model's
    density is of z, not y; the change of variables z = y / a (a = 256 or 128) gives
    p_Y(y) = p_Z(z) |dz/dy| = p_Z(z) a^(-D), hence

        -log p_Y(y) = -log p_Z(z) + D log a,     bpd = (nll + D log a) / (D ln 2)

    with a = 256 for [0, 1] and a = 128 for [-1, 1] (the interval is twice as wide, so the density
    per unit is half as large). Without the term, a density on [0, 1] can have a *negative* NLL
    and the "bits/dim" would mean nothing.

Sanity values: a uniform model gives exactly 8 bits/dim under every convention (P = 256^-D;
p_Z = 1 on [0, 1]^D; p_Z = 2^-D on [-1, 1]^D).
"""
from __future__ import annotations

import math

import torch

__all__ = ["bits_per_dim", "NLL_CONVENTIONS"]

# nll_of -> the log of the scale factor a in z = y / a (+ shift), i.e. the nats added per dimension.
NLL_CONVENTIONS = {
    "discrete": 0.0,
    "continuous_unit": math.log(256.0),
    "continuous_signed": math.log(128.0),
}


def bits_per_dim(nll_nats: torch.Tensor, x: torch.Tensor | tuple[int, ...], *, nll_of: str) -> torch.Tensor:
    """Convert NLLs in nats per example to bits per dimension (see the module docstring).

    Args:
        nll_nats: ``[N]`` negative log-likelihood of each example, in nats (a sum over its
            dimensions, not a mean). A scalar is taken as the NLL of one example.
        x: the data ``[N, C, H, W]`` (or ``[N, ...]``) the NLLs belong to, or the shape of ONE
            example, e.g. ``(1, 28, 28)``; only D = number of values per example is used.
        nll_of: required, nothing is inferred: ``"discrete"`` (a probability of 8-bit integers),
            ``"continuous_unit"`` (a density of dequantized data scaled to [0, 1]: adds D log 256)
            or ``"continuous_signed"`` (a density of dequantized data scaled to [-1, 1]: adds D log 128).

    Returns:
        ``[N]`` bits per dimension (take ``.mean()`` for the data-set figure).
    """
    if nll_of not in NLL_CONVENTIONS:
        raise ValueError(
            f"nll_of={nll_of!r} is not a convention; pass one of {sorted(NLL_CONVENTIONS)}: "
            "'discrete' for a probability of 8-bit integers, 'continuous_unit' / 'continuous_signed' "
            "for a density of uniformly dequantized data scaled to [0, 1] / [-1, 1].")
    nll = torch.as_tensor(nll_nats, dtype=torch.float64)
    if isinstance(x, torch.Tensor):
        if x.dim() < 2:
            raise ValueError(f"x has shape {tuple(x.shape)}; pass the batch [N, ...] or the shape of one example.")
        num_dims = x[0].numel()
        if nll.dim() == 1 and nll.shape[0] != x.shape[0]:
            raise ValueError(f"nll_nats has {nll.shape[0]} entries but x has {x.shape[0]} examples; "
                             "pass one NLL per example (summed over dimensions, in nats).")
    else:
        num_dims = math.prod(x)
    if nll.dim() > 1:
        raise ValueError(f"nll_nats must be [N] (one value per example), got shape {tuple(nll.shape)}; "
                         "sum over the dimensions of each example first.")
    if not torch.isfinite(nll).all():
        raise ValueError("nll_nats contains NaN or inf: the model's log-likelihood diverged; check log_prob().")
    return (nll + num_dims * NLL_CONVENTIONS[nll_of]) / (num_dims * math.log(2.0))
