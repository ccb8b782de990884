"""Independent checks of notebook 07 (DDIM and guidance), as functions of the formula under test.

Each takes the formula (the notebook's inline version, or the library's through an adapter),
computes the same quantity another way, asserts agreement and returns what it measured.
tests/test_notebook_07_checks.py runs each on a copy with a small error and requires a failure.

* ``ddim_marginals``: simulation. x_t ~ q(x_t | x_0), one DDIM step to s with the true noise:
  x_s must again be distributed as q(x_s | x_0) = N(sqrt(alpha_bar_s) x_0, 1 - alpha_bar_s) (z-scores).
* ``ddim_variance_is_posterior``: Gaussian conditioning in DDPM's Markov chain. With
  x_s = sqrt(alpha_bar_s) x_0 + sqrt(1 - alpha_bar_s) e1 and
  x_t = sqrt(alpha_bar_t / alpha_bar_s) x_s + sqrt(1 - alpha_bar_t / alpha_bar_s) e2,
  Var(x_s | x_t, x_0) = Var(x_s) - Cov(x_s, x_t)^2 / Var(x_t); sigma at eta = 1 squared must equal it.
* ``mixture_scores`` / ``cfg_identity``: a 1D two-component Gaussian mixture diffused to time t,
  whose log densities are exact; every gradient is taken by autograd of a log density, and the
  implicit classifier log p(c | x) by Bayes' rule.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

_F64 = torch.float64


def ddim_marginals(step: Callable, alpha_bars: Tensor, pairs=((1000, 980), (600, 500), (200, 20), (50, 1)),
                   etas=(0.0, 0.5, 1.0), x0: float = 0.7, n: int = 200_000, seed: int = 0, z_max: float = 5.0) -> dict:
    """``step(x_t, eps, alpha_bar_t, alpha_bar_s, eta, z) -> x_s`` preserves q(x_s | x_0).

    For each (t, s) and eta: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with n draws
    of eps, one step with that same eps (the network's perfect answer) and fresh z; the sample
    mean and variance of x_s are compared with sqrt(alpha_bar_s) x_0 and 1 - alpha_bar_s by
    z-scores (the variance's standard error is v sqrt(2 / n)). Asserts every |z| < z_max.
    """
    alpha_bars = torch.as_tensor(alpha_bars, dtype=_F64)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for t, s in pairs:
        ab_t, ab_s = alpha_bars[t], alpha_bars[s]
        for eta in etas:
            eps = torch.randn(n, generator=g, dtype=_F64)
            z = torch.randn(n, generator=g, dtype=_F64)
            x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps
            x_s = torch.as_tensor(step(x_t, eps, ab_t, ab_s, eta, z), dtype=_F64)
            mean, var = math.sqrt(ab_s) * x0, 1 - ab_s.item()
            z_mean = (x_s.mean().item() - mean) / math.sqrt(var / n)
            z_var = (x_s.var().item() - var) / (var * math.sqrt(2 / n))
            worst = max(worst, abs(z_mean), abs(z_var))
            assert abs(z_mean) < z_max and abs(z_var) < z_max, (
                f"t={t} -> s={s}, eta={eta}: x_s has mean {x_s.mean():.5f} (q says {mean:.5f}) and variance "
                f"{x_s.var():.5f} (q says {var:.5f})")
    return dict(max_abs_z=worst, pairs=len(pairs), etas=len(etas))


def ddim_variance_is_posterior(sigma: Callable, alpha_bars: Tensor,
                               pairs=((1000, 999), (500, 499), (2, 1), (1000, 950), (400, 100), (50, 10))) -> dict:
    """``sigma(alpha_bar_t, alpha_bar_s, eta)`` at eta = 1, squared, equals Var(x_s | x_t, x_0) of DDPM.

    The reference is Gaussian conditioning on the Markov chain (module docstring); for s = t - 1
    it is DDPM's beta_tilde_t. Asserts relative agreement to 1e-9 (float64).
    """
    alpha_bars = torch.as_tensor(alpha_bars, dtype=_F64)
    worst = 0.0
    for t, s in pairs:
        ab_t, ab_s = alpha_bars[t], alpha_bars[s]
        var_s, var_t = 1 - ab_s, 1 - ab_t  # given x_0
        cov = (ab_t / ab_s).sqrt() * var_s  # Cov(x_s, x_t | x_0)
        reference = var_s - cov ** 2 / var_t
        got = torch.as_tensor(sigma(ab_t, ab_s, 1.0), dtype=_F64) ** 2
        rel = abs(got.item() / reference.item() - 1)
        worst = max(worst, rel)
        assert rel < 1e-9, f"t={t} -> s={s}: sigma^2 = {got.item():.6e}, the posterior variance is {reference.item():.6e}"
    return dict(max_rel_error=worst)


def mixture_scores(alpha_bar: float, means=(-1.5, 2.0), std: float = 0.5, weights=(0.3, 0.7)):
    """Exact log densities of a 1D mixture sum_c pi_c N(m_c, std^2) diffused to alpha_bar.

    Returns (log_p_x_given_c, log_p_x, log_p_c_given_x): functions of x [N] float64; the first
    and last also take the class c (an int). Component c of q(x_t) is
    N(sqrt(alpha_bar) m_c, alpha_bar std^2 + 1 - alpha_bar).
    """
    m = torch.tensor(means, dtype=_F64) * math.sqrt(alpha_bar)
    v = alpha_bar * std ** 2 + 1 - alpha_bar
    log_pi = torch.tensor(weights, dtype=_F64).log()

    def log_p_x_given_c(x: Tensor, c: int) -> Tensor:
        return -0.5 * ((x - m[c]) ** 2 / v + math.log(2 * math.pi * v))

    def log_joint(x: Tensor) -> Tensor:  # [N, C]: log pi_c + log p(x | c)
        return torch.stack([log_pi[c] + log_p_x_given_c(x, c) for c in range(len(means))], dim=1)

    def log_p_x(x: Tensor) -> Tensor:
        return torch.logsumexp(log_joint(x), dim=1)

    def log_p_c_given_x(x: Tensor, c: int) -> Tensor:  # Bayes' rule
        return log_joint(x)[:, c] - log_p_x(x)

    return log_p_x_given_c, log_p_x, log_p_c_given_x


def _grad(f: Callable, x: Tensor) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x).sum(), x)[0]


def cfg_identity(combine: Callable, alpha_bar: float = 0.4, ws=(0.0, 1.0, 3.0, 5.0, 7.5), c: int = 0) -> dict:
    """``combine(eps_cond, eps_uncond, w)`` gives the eps of the guided score.

    Reference: s(x) = grad log p(x | c) + w grad log p(c | x), with p(c | x) by Bayes' rule and
    every gradient by autograd; its eps is -sqrt(1 - alpha_bar) s(x). The formula under test gets
    eps_cond and eps_uncond, each from autograd of its own log density. Asserts 1e-10 agreement
    on a grid of x in [-5, 5].
    """
    log_p_x_given_c, log_p_x, log_p_c_given_x = mixture_scores(alpha_bar)
    x = torch.linspace(-5, 5, 201, dtype=_F64)
    root = math.sqrt(1 - alpha_bar)
    eps_cond = -root * _grad(lambda u: log_p_x_given_c(u, c), x)
    eps_uncond = -root * _grad(log_p_x, x)
    worst = 0.0
    for w in ws:
        reference = -root * (_grad(lambda u: log_p_x_given_c(u, c), x) + w * _grad(lambda u: log_p_c_given_x(u, c), x))
        err = (torch.as_tensor(combine(eps_cond, eps_uncond, w), dtype=_F64) - reference).abs().max().item()
        worst = max(worst, err)
        assert err < 1e-10, f"w={w}: the combination is {err:.2e} away from the guided score's eps"
    return dict(max_abs_error=worst, weights=list(ws))
