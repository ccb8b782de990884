"""From 8-bit pixels to a continuous density, and the logit transform (notebook 05, section 5).

The one convention of the flows (``nll_of="continuous_unit"`` of ``course_lib.evaluate.bpd``)
----------------------------------------------------------------------------------------------
The flow models the density of **y = (x + u) / 256 in [0, 1)^D**, x the integer pixels, u ~ U[0, 1)^D
(uniform dequantisation). Every ``log_prob`` in ``course_lib.flows`` is log p_Y(y) in nats; every
layer that maps y further (the logit transform below, the flow's layers) adds its log|det| to it.
Bits per dimension of the *integers* follow as

    bpd = (-log p_Y(y) + D log 256) / (D ln 2)     (``bits_per_dim(nll, x, nll_of="continuous_unit")``)

and E_u[bpd] is an upper bound on -log2 P(x) / D (Jensen; Theis et al. 2016). A uniform density
p_Y = 1 on [0, 1)^D gives exactly 8 bits/dim. Without dequantisation a density on the integers
themselves can grow without bound (notebook 05 shows it), so the number would mean nothing.

Variational dequantisation (Ho et al. 2019, Flow++) draws u from a learned q(u | x) and adds
E_q log q(u | x) to the NLL: ``course_lib.flows.variational``, ``FlowModel(dequantization="variational")``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["BPD_CONVENTION", "LogitTransform", "uniform_dequantize"]

# y = (x + u) / 256 in [0, 1): the nll_of to pass to course_lib.evaluate.bits_per_dim
BPD_CONVENTION = "continuous_unit"


def uniform_dequantize(x: Tensor) -> Tensor:
    """uint8 pixels [N, ...] -> y = (x + u) / 256, u ~ U[0, 1) drawn on x's device (global generator)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"uniform_dequantize expects uint8 pixels 0..255, got {x.dtype}; pass the images as "
                        "load_dataset stores them")
    u = torch.rand(x.shape, device=x.device)
    return (x.float() + u) / 256.0


class LogitTransform(nn.Module):
    """y in [0, 1] -> v = logit(alpha + (1 - 2 alpha) y), an invertible map onto the real line.

    The squeeze into [alpha, 1 - alpha] keeps v finite at y = 0 and 1 (RealNVP, Dinh et al. 2017, used
    alpha = 0.05 on CIFAR-10). With s = alpha + (1 - 2 alpha) y:
        dv/dy = (1 - 2 alpha) / (s (1 - s)),    log_det = sum_d [log(1 - 2 alpha) - log s_d - log(1 - s_d)]   [N]
    """

    def __init__(self, alpha: float = 1e-4):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * y
        v = torch.log(s) - torch.log1p(-s)
        log_det = (math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return v, log_det

    def inverse(self, v: Tensor) -> Tensor:
        return (torch.sigmoid(v) - self.alpha) / (1 - 2 * self.alpha)
