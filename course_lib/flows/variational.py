"""Variational dequantisation (Ho et al. 2019, Flow++): learn the noise u that fills each pixel's bin.

Uniform dequantisation asks the flow to model y = (x + u) / 256 with u ~ U[0, 1)^D: a density that is
flat inside every bin and jumps at its edges, which a smooth flow can only approximate. Instead draw u
from a learned q(u | x) on [0, 1)^D; for any such q (Jensen's inequality, as in the ELBO)

    log P(x) >= E_{u ~ q(u|x)} [ log p_Y((x + u) / 256) - log q(u | x) ] - D log 256,

with equality when q(u | x) is the flow's own density inside the bin. Uniform q has log q = 0, so this
bound is never worse than the uniform one at the optimum of q, and training maximises it in p and q
together. Here q is a small conditional flow:

    eps ~ N(0, I),   h = g(eps; x) (affine couplings whose s, t also see features of x),   u = sigmoid(h)
    log q(u | x) = log N(eps; 0, I) - log|det dg/deps| - sum_d log sigmoid'(h_d),
    log sigmoid'(h) = log sigmoid(h) + log(1 - sigmoid(h)) = -softplus(-h) - softplus(h).

Shapes: x [N, C, H, W] (pixel levels 0..255, any dtype), u [N, C, H, W] in (0, 1), log_q [N] nats.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.flows.layers import AffineCoupling, checkerboard_mask
from course_lib.flows.multiscale import ConvNet, standard_normal_log_prob

__all__ = ["ConditionalCoupling", "VariationalDequantizer"]


class ConditionalCoupling(AffineCoupling):
    """An ``AffineCoupling`` whose (s, t) = net([b * e, context]): the context (features of x) enters the
    network only, so the Jacobian in e stays block-triangular and log_det = sum (1 - b) * s as before."""

    def forward(self, e: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._s_t(torch.cat([e * self.mask, context], dim=1))
        return e * torch.exp(s) + t, s.flatten(1).sum(1)


class VariationalDequantizer(nn.Module):
    """q(u | x): ``couplings`` conditional checkerboard couplings on Gaussian noise, then a sigmoid."""

    def __init__(self, image_shape=(1, 28, 28), hidden: int = 16, couplings: int = 4, scale_bound: float = 3.0):
        super().__init__()
        c, h, w = image_shape
        self.context = nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())  # [N, hidden, H, W]
        self.couplings = nn.ModuleList(
            ConditionalCoupling(ConvNet(c + hidden, hidden, out_channels=2 * c), checkerboard_mask(c, h, w, i % 2),
                                scale_bound)
            for i in range(couplings))

    def transform(self, eps: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Given the noise eps [N, C, H, W] and the pixels x: (u, log q(u | x))."""
        context = self.context(x.to(eps.dtype) / 127.5 - 1)
        h, log_q = eps, standard_normal_log_prob(eps)
        for layer in self.couplings:
            h, log_det = layer(h, context)
            log_q = log_q - log_det
        log_q = log_q + (F.softplus(-h) + F.softplus(h)).flatten(1).sum(1)  # - log|du/dh| of the sigmoid
        return torch.sigmoid(h), log_q

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pixels x [N, C, H, W] -> (u ~ q(u | x) [N, C, H, W] in (0, 1), log q(u | x) [N])."""
        return self.transform(torch.randn(x.shape, device=x.device), x)
