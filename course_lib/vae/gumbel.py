"""Gumbel-max sampling and the Gumbel-softmax relaxation (notebook 03, section "Discrete latents").

Gumbel(0, 1) noise has density p(g) = exp(-(g + exp(-g))) and is drawn by inversion,
g = -log(-log u), u ~ U(0, 1). With logits log pi_i (pi normalised or not):

* Gumbel-max (exact sampling from a categorical)::

      k = argmax_i (g_i + log pi_i)   =>   P(k = i) = pi_i / sum_j pi_j

* Gumbel-softmax / Concrete relaxation (Jang et al. 2017; Maddison et al. 2017): argmax has no
  gradient, so it is replaced by a softmax at temperature tau::

      y_i = softmax((g + log pi) / tau)_i        y -> one_hot(argmax_i (g_i + log pi_i)) as tau -> 0

  A dVAE feeds the decoder the weighted sum of codes sum_j y_j e_j; tau is lowered during training.
* Straight-through ("hard") variant: the forward value is the one-hot of the argmax, the gradient
  is that of the soft y: ``y_hard + y - sg[y]``.

Shapes: logits [..., K] (the categories on the last axis); samples [...] (indices) or [..., K].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gumbel_max_sample", "gumbel_softmax", "sample_gumbel"]


def sample_gumbel(shape, device=None, dtype=torch.float32, generator: torch.Generator | None = None) -> Tensor:
    """Gumbel(0, 1) noise g = -log(-log u), u ~ U(0, 1), of the given shape."""
    u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    tiny = torch.finfo(dtype).tiny
    e = (-torch.log(u.clamp(min=tiny))).clamp(min=tiny)  # -log u ~ Exponential(1); u = 0 or 1 would give inf
    return -torch.log(e)


def gumbel_max_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Exact categorical samples: argmax_i (logits_i + g_i) over the last axis -> indices [...] (int64)."""
    g = sample_gumbel(logits.shape, logits.device, logits.dtype, generator)
    return (logits + g).argmax(dim=-1)


def gumbel_softmax(logits: Tensor, tau: float = 1.0, hard: bool = False, gumbel: Tensor | None = None) -> Tensor:
    """y = softmax((logits + g) / tau) over the last axis, [..., K]; ``hard=True``: the one-hot of the argmax
    in the forward pass with the soft gradient (straight-through). ``gumbel`` passes the noise g (to
    compare temperatures on the same draw); by default it is drawn here."""
    if tau <= 0:
        raise ValueError(f"the temperature tau must be > 0, got {tau} (tau -> 0 approaches argmax: use hard=True "
                         "or gumbel_max_sample for exact one-hot samples)")
    g = sample_gumbel(logits.shape, logits.device, logits.dtype) if gumbel is None else gumbel
    y = torch.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return y
    y_hard = F.one_hot(y.argmax(dim=-1), y.shape[-1]).to(y.dtype)
    return y_hard + y - y.detach()
