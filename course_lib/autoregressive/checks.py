"""Which input values does each output see? Autograd answers it for a whole network (notebook 02, "Causality").

Raster order with the channels innermost: value (c, i, j) of a C x H x W image has index
t = (i * W + j) * C + c, so R, G, B of a pixel are consecutive and a pixel's channels come before
the next pixel's. A network f is autoregressive (type A) iff d f_t / d x_s = 0 for every s >= t.

``dependence(f, shape)`` builds the D x D matrix of |d f_t / d x_s| > 0 with ONE backward pass:
D copies of a random input go through f as one batch, copy t back-propagates output t only, so
row t of the input gradient is the gradient of output t. (An exact zero can only come from the
structure of f, or from a dead ReLU by bad luck; nonzero entries prove dependence.)
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["causality_violations", "dependence", "raster_index", "receptive_field"]


def raster_index(c: int, i: int, j: int, shape: tuple[int, int, int]) -> int:
    """Index t of value (c, i, j) in the autoregressive order: (i * W + j) * C + c."""
    C, _H, W = shape
    return (i * W + j) * C + c


def dependence(f, shape: tuple[int, int, int], *, trials: int = 3, seed: int = 0) -> Tensor:
    """bool [D, D]: entry [t, s] says output value t depends on input value s (raster indices).

    ``f``: input [N, C, H, W] -> output [N, C, H, W] or logits [N, C, K, H, W] (randomly weighted sum
    over K). Dependence at any of ``trials`` random inputs counts (a ReLU dead at one input hides it)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([_dependence_at(f, shape, gen) for _ in range(trials)]).any(0)


def _dependence_at(f, shape: tuple[int, int, int], gen: torch.Generator) -> Tensor:
    C, H, W = shape
    D = C * H * W
    x = torch.randn(1, C, H, W, generator=gen).expand(D, C, H, W).clone().requires_grad_(True)
    out = f(x)
    if out.dim() == 5:
        weights = torch.randn(out.shape[2], 1, 1, generator=gen).to(out)
        out = (out * weights).sum(2)                            # [D, C, H, W]: a random mix of the K logits
    if out.shape != (D, C, H, W):
        raise ValueError(f"f must map [N, C, H, W] to [N, C, H, W] or [N, C, K, H, W]; got {tuple(out.shape)}")
    order = out.permute(0, 2, 3, 1).reshape(D, D)               # [copy, t] with t in raster order
    order.diagonal().sum().backward()                           # copy t back-propagates output t
    grad = x.grad.permute(0, 2, 3, 1).reshape(D, D)             # [t, s]
    return grad != 0


def causality_violations(dep: Tensor) -> Tensor:
    """Pairs (t, s) with s >= t where output t depends on input s: int64 [M, 2] (empty if causal)."""
    return torch.triu(dep).nonzero()


def receptive_field(dep: Tensor, c: int, i: int, j: int, shape: tuple[int, int, int]) -> Tensor:
    """bool [H, W]: pixels any channel of which output value (c, i, j) depends on (for pictures)."""
    C, H, W = shape
    return dep[raster_index(c, i, j, shape)].view(H, W, C).any(-1)
