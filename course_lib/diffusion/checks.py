"""Independent checks of the DDPM formulas, written as functions of the formula under test.

Notebook 06 runs each check twice: on the few lines it derives inline, and on
``GaussianDiffusion`` (through a small adapter). ``tests/test_notebook_06_checks.py`` runs the
same functions on formulas with a 1% error and expects them to fail, so a check that could not
catch a wrong formula fails the test suite. A check computes its reference *without* the formula
under test: Bayes' rule on a grid, torch.distributions' KL divergence, the exact moments of
Algorithm 2 on Gaussian data, numerical integration. It raises ``AssertionError`` when the two
disagree and otherwise returns what it compared, for printing.

Conventions as in ``gaussian_diffusion``: ``alpha_bars`` is float64 [T + 1] with
``alpha_bars[0] = 1``, and ``t`` is lecture time 1..T.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["posterior_on_grid", "eps_weight_from_kl", "gaussian_eps_star", "sampler_moments",
           "sampler_on_gaussian", "discretized_decoder_mass"]

_F64 = torch.float64


def _schedule(alpha_bars: Tensor) -> tuple[Tensor, Tensor]:
    """alphas, betas [T + 1] from alpha_bars (entry 0: alpha_0 = 1, beta_0 = 0)."""
    alpha_bars = torch.as_tensor(alpha_bars, dtype=_F64)
    alphas = torch.cat([torch.ones(1, dtype=_F64), alpha_bars[1:] / alpha_bars[:-1]])
    return alphas, 1 - alphas


def posterior_on_grid(q_posterior: Callable, alpha_bars: Tensor, x0: float = 0.7,
                      ts: tuple[int, ...] = (2, 10, 100, 500, 1000), seed: int = 0,
                      grid_points: int = 1_200_001) -> list[dict]:
    """q(x_{t-1} | x_t, x_0) by Bayes' rule on a 1D grid against ``q_posterior(x0, x_t, t) -> (mean, var)``.

    For one pixel x0 and a drawn x_t, prior x likelihood q(x_{t-1} | x0) q(x_t | x_{t-1}) is
    evaluated on a grid of x_{t-1} with torch.distributions.Normal (not the formula), normalised
    numerically, and its mean and variance are compared with the formula's: mean to 1e-6
    (absolute), variance to 1e-4 (relative). x0, x_t are passed as float64 0-d tensors, t as int.
    Returns one dict per t: t, x_t, mean_grid, mean, var_grid, var.
    """
    alphas, betas = _schedule(alpha_bars)
    normal = torch.distributions.Normal
    grid = torch.linspace(-6, 6, grid_points, dtype=_F64)
    dx = grid[1] - grid[0]
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.tensor(x0, dtype=_F64)
    rows = []
    for t in ts:
        x_t = alpha_bars[t].sqrt() * x0 + (1 - alpha_bars[t]).sqrt() * torch.randn((), generator=gen, dtype=_F64)
        log_w = (normal(alpha_bars[t - 1].sqrt() * x0, (1 - alpha_bars[t - 1]).sqrt()).log_prob(grid)
                 + normal(alphas[t].sqrt() * grid, betas[t].sqrt()).log_prob(x_t))
        w = torch.exp(log_w - log_w.max())
        w = w / (w.sum() * dx)  # the posterior density on the grid
        mean_grid = (w * grid).sum() * dx
        var_grid = (w * (grid - mean_grid) ** 2).sum() * dx
        mean, var = (torch.as_tensor(v).to(_F64).reshape(()) for v in q_posterior(x0, x_t, t))
        rows.append(dict(t=t, x_t=x_t.item(), mean_grid=mean_grid.item(), mean=mean.item(),
                         var_grid=var_grid.item(), var=var.item()))
        assert abs(mean - mean_grid) < 1e-6, f"t = {t}: posterior mean {mean.item():.7f}, Bayes on a grid {mean_grid.item():.7f}"
        assert abs(var / var_grid - 1) < 1e-4, f"t = {t}: posterior variance {var.item():.4e}, grid {var_grid.item():.4e}"
    return rows


def eps_weight_from_kl(eps_weight: Callable, alpha_bars: Tensor, sigma2: Tensor, n: int = 64, seed: int = 0,
                       rtol: float = 1e-6) -> dict:
    """L_{t-1} minus its value at eps_theta = eps equals ``eps_weight(t) * ||eps - eps_theta||^2``.

    The KL divergence between q(x_{t-1} | x_t, x_0) and p_theta(x_{t-1} | x_t) is computed by
    torch.distributions.kl_divergence (its own formula), with mu_theta in the eps-form and the
    posterior in the x_0-form; ``sigma2`` [T + 1] is the reverse variance sigma_t^2.
    ``eps_weight(t)`` gets an int64 [n] tensor of t in 2..T and returns lambda_t [n].
    Returns the largest relative error and the t that were drawn.
    """
    alphas, betas = _schedule(alpha_bars)
    sigma2 = torch.as_tensor(sigma2, dtype=_F64)
    gen = torch.Generator().manual_seed(seed)
    T = len(alpha_bars) - 1
    t = torch.randint(2, T + 1, (n,), generator=gen)
    x0, eps, eps_pred = torch.randn(3, n, 5, generator=gen, dtype=_F64)  # n examples of 5 "pixels"
    ab, ab_prev = alpha_bars[t, None], alpha_bars[t - 1, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    mu_tilde = ab_prev.sqrt() * betas[t, None] / (1 - ab) * x0 + alphas[t, None].sqrt() * (1 - ab_prev) / (1 - ab) * x_t
    beta_tilde = (1 - ab_prev) / (1 - ab) * betas[t, None]
    normal = torch.distributions.Normal

    def kl(e):  # KL(q || p_theta) summed over the 5 pixels, with eps_theta = e
        mu_theta = (x_t - betas[t, None] / (1 - ab).sqrt() * e) / alphas[t, None].sqrt()
        q, p = normal(mu_tilde, beta_tilde.sqrt()), normal(mu_theta, sigma2[t, None].sqrt().expand_as(mu_theta))
        return torch.distributions.kl_divergence(q, p).sum(1)

    weight_kl = (kl(eps_pred) - kl(eps)) / ((eps - eps_pred) ** 2).sum(1)  # (n,)
    weight = torch.as_tensor(eps_weight(t)).to(_F64).reshape(-1)
    rel = ((weight - weight_kl).abs() / weight_kl).max().item()
    assert rel < rtol, f"eps weight off by a relative {rel:.2e} from the KL divergence (tolerance {rtol:.0e})"
    return dict(max_rel_error=rel, t=t)


def gaussian_eps_star(alpha_bars: Tensor, m: float, s: float) -> Callable:
    """E[eps | x_t] for data x_0 ~ N(m, s^2): sqrt(1 - alpha_bar_t) (x_t - sqrt(alpha_bar_t) m) / v_t,
    v_t = alpha_bar_t s^2 + 1 - alpha_bar_t (Gaussian conditioning). Returns ``eps_star(x_t, t)``,
    t an int or a tensor broadcastable against x_t."""
    alpha_bars = torch.as_tensor(alpha_bars, dtype=_F64)

    def eps_star(x_t: Tensor, t) -> Tensor:
        ab = alpha_bars[t].to(x_t.dtype)
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * m) / (ab * s**2 + 1 - ab)

    return eps_star


def sampler_moments(step: Callable, T: int) -> tuple[float, float]:
    """Mean and variance of x_0 from Algorithm 2, exactly (no sampling), for an affine step.

    ``step(x_t, t, z) -> x_{t-1}`` (float64 [1] tensors; the network is inside ``step``) must be
    affine in x_t and z, as Algorithm 2 is when eps_theta is linear in x_t (Gaussian data). Its
    coefficients are read off by probing, x_{t-1} = A x_t + B + C z, and the Gaussian
    N(0, 1) = p(x_T) is pushed through t = T..1: mean <- A mean + B, var <- A^2 var + C^2.
    """
    zero, one = torch.zeros(1, dtype=_F64), torch.ones(1, dtype=_F64)
    mean, var = torch.zeros(1, dtype=_F64), torch.ones(1, dtype=_F64)
    for t in range(T, 0, -1):
        B = step(zero, t, zero).to(_F64)
        A, C = step(one, t, zero).to(_F64) - B, step(zero, t, one).to(_F64) - B
        mean, var = A * mean + B, A**2 * var + C**2
    return mean.item(), var.item()


def sampler_on_gaussian(step: Callable, T: int, m: float, s: float, tol: float = 1e-3) -> dict:
    """Algorithm 2 with the exact noise predictor must turn N(0, 1) into the data N(m, s^2).

    Use s = 1 with sigma_t^2 = beta_t: then beta_t is the exact reverse variance and only the
    prior mismatch p(x_T) = N(0, 1) vs q(x_T) remains (of order sqrt(alpha_bar_T) |m|, tiny).
    Asserts |mean - m| < tol and |std / s - 1| < tol; returns mean, std, and both errors.
    """
    mean, var = sampler_moments(step, T)
    std = math.sqrt(var)
    out = dict(mean=mean, std=std, mean_error=mean - m, std_rel_error=std / s - 1)
    assert abs(mean - m) < tol, f"Algorithm 2 ends at mean {mean:.5f}, the data have {m}"
    assert abs(std / s - 1) < tol, f"Algorithm 2 ends at std {std:.5f}, the data have {s}"
    return out


def discretized_decoder_mass(log_likelihood: Callable, means=(-1.0, -0.3, 0.0, 0.62, 1.0),
                             stds=(0.004, 0.03, 0.5), bins: int = 256, points_per_bin: int = 401) -> dict:
    """The discretized decoder is a distribution on the ``bins`` pixel values, and each value's
    probability is the Gaussian density integrated over its bin (the edge bins reach to -/+inf).

    ``log_likelihood(x, mean, log_var)`` gets x = all bins values in [-1, 1] (float64 [bins]).
    Reference: Simpson's rule on the density exp(-(x - mean)^2 / 2 sigma^2) / (sqrt(2 pi) sigma)
    over each bin, the edge bins integrated out to 12 standard deviations. Asserts that the
    probabilities sum to 1 (to 1e-9) and match the integral (to 1e-6 absolute).
    """
    x = torch.linspace(-1, 1, bins, dtype=_F64)
    half = 1.0 / (bins - 1)
    worst_sum, worst_bin = 0.0, 0.0
    for mean in means:
        for std in stds:
            p = torch.as_tensor(log_likelihood(x, torch.tensor(mean, dtype=_F64),
                                               torch.tensor(2 * math.log(std), dtype=_F64))).to(_F64).exp()
            lo, hi = x - half, x + half
            lo[0], hi[-1] = min(-1.0, mean) - 12 * std, max(1.0, mean) + 12 * std
            u = torch.linspace(0, 1, points_per_bin, dtype=_F64)
            pts = lo[:, None] + (hi - lo)[:, None] * u  # (bins, points)
            dens = torch.exp(-0.5 * ((pts - mean) / std) ** 2) / (math.sqrt(2 * math.pi) * std)
            simpson = torch.ones(points_per_bin, dtype=_F64)  # Simpson's rule weights 1, 4, 2, 4, ..., 4, 1
            simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
            integral = (dens * simpson).sum(1) * (hi - lo) / (3 * (points_per_bin - 1))
            worst_sum = max(worst_sum, abs(p.sum().item() - 1))
            worst_bin = max(worst_bin, (p - integral).abs().max().item())
    assert worst_sum < 1e-9, f"the probabilities of the {bins} values sum to 1 {worst_sum:+.1e}"
    assert worst_bin < 1e-6, f"a bin's probability is {worst_bin:.1e} away from the integral of the density"
    return dict(max_sum_error=worst_sum, max_bin_error=worst_bin)
