"""Diffusion on 2D points (notebook 06, section "Diffusion in 2D").

* ``MLPDenoiser``: eps_theta(x_t, t) for points in R^D, a small MLP with a sinusoidal time embedding;
  it trains in seconds on a CPU and plugs into ``GaussianDiffusion(net, data_shape=(D,))``.
* ``MeanPredictor``: the same network read as a *mean* predictor mu_theta(x_t, t) (Ho et al.
  2020, section 4.2, "predicting mu_tilde"), exposed to ``GaussianDiffusion`` as the noise
  prediction it implies, so sampling and the bound work unchanged.
* ``mixture_eps_star``: the exact minimiser of L_simple, E[eps | x_t], when the data are a mixture
  of equally weighted isotropic Gaussians (the ``8gaussians`` toy set): the field the network
  should learn.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from course_lib.nn import timestep_embedding

__all__ = ["MLPDenoiser", "MeanPredictor", "mixture_eps_star"]


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t): [N, D] points and [N] int64 times -> [N, D].

    The input is [x_t, sinusoidal(t)] (``emb_dim`` features of t), then ``layers`` hidden layers
    of width ``hidden`` with SiLU. 2D defaults: about 35k parameters.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, emb_dim: int = 32, layers: int = 3):
        super().__init__()
        self.emb_dim = emb_dim
        sizes = [dim + emb_dim] + [hidden] * layers
        blocks = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, dim))

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = timestep_embedding(t, self.emb_dim)  # (N, emb_dim)
        return self.net(torch.cat([x_t, emb], dim=1))  # (N, D)


class MeanPredictor(nn.Module):
    """Read ``net``'s output as mu_theta(x_t, t) and return the eps_theta it implies.

    From mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t):
    eps_theta = (x_t - sqrt(alpha_t) mu_theta) sqrt(1 - alpha_bar_t) / beta_t.
    The loss lambda_t ||eps - eps_theta||^2 on this eps_theta *is* the true bound's
    ||mu_tilde - mu_theta||^2 / (2 sigma_t^2), so "mean prediction with the bound's weights" and
    "noise prediction with the bound's weights" differ only in what the network outputs.
    ``alpha_bars``: float64 [T + 1] schedule.
    """

    def __init__(self, net: nn.Module, alpha_bars: Tensor):
        super().__init__()
        self.net = net
        alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
        alphas = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[1:] / alpha_bars[:-1]])
        betas = 1 - alphas
        betas[0] = 1.0  # entry 0 is never used; avoids 0 / 0
        self.register_buffer("sqrt_alphas", alphas.sqrt().float())
        self.register_buffer("eps_scale", ((1 - alpha_bars).sqrt() / betas).float())

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        mu = self.net(x_t, t, y)  # (N, D): mu_theta(x_t, t)
        shape = (-1, *([1] * (x_t.dim() - 1)))
        return (x_t - self.sqrt_alphas[t].view(shape) * mu) * self.eps_scale[t].view(shape)


def mixture_eps_star(alpha_bars: Tensor, centres: Tensor, std: float) -> Callable:
    """E[eps | x_t] for x_0 from an equal-weight mixture of N(c_k, std^2 I), k = 1..K.

    q(x_t) is the mixture of N(sqrt(alpha_bar_t) c_k, v_t I), v_t = alpha_bar_t std^2 + 1 - alpha_bar_t,
    and E[eps | x_t] = -sqrt(1 - alpha_bar_t) grad log q(x_t)
                     = sqrt(1 - alpha_bar_t) sum_k r_k(x_t) (x_t - sqrt(alpha_bar_t) c_k) / v_t,
    with r_k(x_t) the posterior probability of component k (a softmax of the log densities).
    ``centres``: [K, D]. Returns ``eps_star(x_t [N, D], t [N] int64) -> [N, D]``.
    """
    alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)

    def eps_star(x_t: Tensor, t: Tensor) -> Tensor:
        ab = alpha_bars.to(x_t.device)[t].to(x_t.dtype)[:, None, None]  # (N, 1, 1)
        v = ab * std**2 + 1 - ab
        diff = x_t[:, None, :] - ab.sqrt() * centres.to(x_t)[None]  # (N, K, D)
        r = torch.softmax(-(diff**2).sum(-1, keepdim=True) / (2 * v), dim=1)  # (N, K, 1)
        return (1 - ab[:, 0]).sqrt() * (r * diff).sum(1) / v[:, 0]  # (N, D)

    return eps_star
