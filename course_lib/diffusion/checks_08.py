"""Independent checks of notebook 08's formulas, written as functions of the formula under test.

As in ``checks`` (notebook 06): each function computes its reference *without* the formula it is
given (Bayes' rule on a grid, autograd of a log density from torch.distributions, the moment
equations of an SDE integrated numerically, simulation binned by x_t, quadrature in another
variable), raises ``AssertionError`` when the two disagree, and otherwise returns what it compared.
``tests/test_diffusion_score.py`` and its siblings run every check on copies of the formula with a
1% error and require a failure. Monte Carlo checks use fixed seeds and report z-scores.

* ``score_eps_relation``: score = -E[eps | x_t] / sqrt(1 - alpha_bar) (Tweedie), 1D mixture.
* ``dsm_minimiser``: the DSM loss's weighting, and that the exact score of the noised data is its
  stationary point (the minimiser is E[-z / sigma | x~]).
* ``vp_marginal``: the VP-SDE's marginal mean and std against its moment ODEs.
* ``sde_ode_marginals``: reverse-SDE and probability-flow samplers end at the exact marginal.
* ``vdm_endpoint_invariance``: L_inf depends on the schedule only through its end points
  (``binary_denoiser``: the exact denoiser of +-1 pixels, a function of (z, gamma) only).
* ``cfm_minimiser``: the flow-matching minimiser is E[x1 - x0 | x_t], by binned simulation;
  ``cfm_loss_minimiser``: the CFM loss's path, target, and that this velocity is its stationary point.
* ``energy_distance``: a two-sample statistic for comparing samplers (used by notebook 08).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["score_eps_relation", "dsm_minimiser", "vp_marginal", "sde_ode_marginals", "vdm_endpoint_invariance",
           "cfm_minimiser", "cfm_loss_minimiser", "energy_distance", "binary_denoiser", "MIXTURE_1D"]

_F64 = torch.float64
# the 1D test mixture: equal weights, centres and standard deviations
MIXTURE_1D = {"centres": (-1.0, 0.5, 2.0), "stds": (0.3, 0.2, 0.5)}


def _mixture_1d(scale: Tensor | float = 1.0, noise_std: Tensor | float = 0.0) -> torch.distributions.Distribution:
    """The law of scale * x0 + noise_std * eps for x0 from MIXTURE_1D (torch.distributions, float64)."""
    c, s = torch.tensor(MIXTURE_1D["centres"], dtype=_F64), torch.tensor(MIXTURE_1D["stds"], dtype=_F64)
    scale, noise_std = torch.as_tensor(scale, dtype=_F64)[..., None], torch.as_tensor(noise_std, dtype=_F64)[..., None]
    comp = torch.distributions.Normal(scale * c, (scale ** 2 * s ** 2 + noise_std ** 2).sqrt())
    mix = torch.distributions.Categorical(torch.ones(comp.batch_shape, dtype=_F64))
    return torch.distributions.MixtureSameFamily(mix, comp)


def _autograd_score(dist, x: Tensor) -> Tensor:
    """d/dx log p(x) by autograd (float64)."""
    x = x.detach().to(_F64).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(dist.log_prob(x).sum(), x)
    return grad


def score_eps_relation(score_from_eps: Callable, alpha_bars=(0.98, 0.6, 0.1), grid_points: int = 100_001,
                       rtol: float = 1e-6) -> list[dict]:
    """score(x_t) = -E[eps | x_t] / sqrt(1 - alpha_bar) for x0 from the 1D mixture ``MIXTURE_1D``.

    ``score_from_eps(eps [N], alpha_bar float) -> score [N]`` is the formula under test. E[eps | x_t]
    is computed by Bayes' rule on a grid of x0 (prior x likelihood, normalised numerically, with
    eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)), the score by autograd of log q(x_t)
    (torch.distributions). Asserts relative agreement to ``rtol``; returns one dict per alpha_bar.
    """
    x0 = torch.linspace(-5, 6, grid_points, dtype=_F64)
    log_prior = _mixture_1d().log_prob(x0)
    rows = []
    for ab in alpha_bars:
        x_t = torch.linspace(-2.5, 3.0, 23, dtype=_F64)
        a, sd = math.sqrt(ab), math.sqrt(1 - ab)
        log_w = log_prior[None] + torch.distributions.Normal(a * x0[None], sd).log_prob(x_t[:, None])  # (23, G)
        w = torch.softmax(log_w, dim=1)
        eps_mean = (w * (x_t[:, None] - a * x0[None]) / sd).sum(1)  # E[eps | x_t]
        reference = _autograd_score(_mixture_1d(a, sd), x_t)
        score = torch.as_tensor(score_from_eps(eps_mean, ab)).to(_F64).reshape(-1)
        rel = ((score - reference).abs() / reference.abs().clamp(min=1e-3)).max().item()
        rows.append(dict(alpha_bar=ab, max_rel_error=rel))
        assert rel < rtol, f"alpha_bar = {ab}: score from eps off by a relative {rel:.2e} from autograd of log q(x_t)"
    return rows


def dsm_minimiser(dsm_loss: Callable, sigmas=(1.0, 0.3, 0.1), n: int = 600_000, seed: int = 0,
                  z_max: float = 4.0) -> dict:
    """Two properties of the noise-conditional DSM loss ``dsm_loss(score_fn, x, sigmas, idx=, z=) -> [N]``.

    (a) The noised input and the weighting lambda(sigma) = sigma^2 (per coordinate): a probe score_fn = 0
        must be called at (x + sigma z, sigma), and the loss of each example is then 1/2 z^2 exactly.
    (b) Its minimiser is the score of the noised data: for x0 from ``MIXTURE_1D``, the derivative
        d/d delta of the mean loss at score_fn = exact score + delta h (autograd) has mean zero for
        every direction h (h = 1 and h = the exact score). The exact score comes from autograd
        of torch.distributions' log density of x0 + sigma z. Asserts |z-score| < z_max for each h.
    """
    g = torch.Generator().manual_seed(seed)
    x, idx = _draw_mixture(n, g)[:, None], torch.randint(len(sigmas), (n,), generator=g)
    z = torch.randn(n, 1, generator=g, dtype=_F64)
    seen = {}

    def zero_score(x_noisy: Tensor, sigma: Tensor) -> Tensor:  # records where the loss evaluates the score
        seen.update(x=x_noisy, sigma=sigma)
        return torch.zeros_like(x_noisy)

    zero = torch.as_tensor(dsm_loss(zero_score, x, sigmas, idx=idx, z=z)).reshape(-1)
    sigma = torch.tensor(sigmas, dtype=_F64)[idx]
    input_error = max((seen["x"][:, 0] - (x[:, 0] + sigma * z[:, 0])).abs().max().item(),
                      (seen["sigma"] - sigma).abs().max().item())
    assert input_error < 1e-9, f"the score is not evaluated at (x + sigma z, sigma) (off by up to {input_error:.2e})"
    weight_error = (zero - 0.5 * z[:, 0] ** 2).abs().max().item()
    assert weight_error < 1e-9, f"with score 0 the loss is not 1/2 z^2 (off by up to {weight_error:.2e}): wrong weighting"

    def exact(x_: Tensor, sigma: Tensor) -> Tensor:  # grad log q_sigma by autograd, one sigma per example
        return _autograd_score(_mixture_1d(1.0, sigma.to(_F64)), x_[:, 0])[:, None].to(x_)

    out = {"input_error": input_error, "weight_error": weight_error}
    out.update(_stationary(lambda fn: dsm_loss(fn, x, sigmas, idx=idx, z=z), exact, n, z_max))
    return out


def _stationary(per_example_loss: Callable, exact: Callable, n: int, z_max: float) -> dict:
    """z-scores of d/d delta of the mean loss at fn = exact + delta h, for h = 1 and h = exact (autograd).

    ``per_example_loss(fn) -> [n]`` evaluates the loss of a candidate fn (called as fn(x, c) with 1D
    data [n, 1]); one delta per example gives every example's derivative in one backward pass.
    Asserts |z| < z_max: at the minimiser the derivative vanishes in expectation for every h.
    """
    out = {}
    for name, h in {"h=1": torch.ones_like, "h=exact": lambda v: v}.items():
        delta = torch.zeros(n, 1, dtype=_F64, requires_grad=True)
        with torch.enable_grad():
            per = per_example_loss(lambda x_, c, delta=delta, h=h: exact(x_, c) + delta * h(exact(x_, c)))
            (deriv,) = torch.autograd.grad(torch.as_tensor(per).sum(), delta)
        deriv = deriv[:, 0]
        out[name] = z_score = (deriv.mean() / (deriv.std() / math.sqrt(n))).item()
        assert abs(z_score) < z_max, (f"direction {name}: d loss / d delta = {deriv.mean().item():.2e} at the exact "
                                      f"field (z = {z_score:.1f}): it does not minimise this loss")
    return out


def _draw_mixture(n: int, g: torch.Generator) -> Tensor:
    """n draws of MIXTURE_1D, [n] float64."""
    c, s = torch.tensor(MIXTURE_1D["centres"], dtype=_F64), torch.tensor(MIXTURE_1D["stds"], dtype=_F64)
    k = torch.randint(len(c), (n,), generator=g)
    return c[k] + s[k] * torch.randn(n, generator=g, dtype=_F64)


def vp_marginal(marginal: Callable, beta: Callable, ts=(0.01, 0.1, 0.3, 0.6, 1.0), h: float = 1e-3,
                atol: float = 1e-7) -> list[dict]:
    """q(x_t | x0) of the VP-SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw against its moment equations.

    ``marginal(t [1] float64) -> (mean coefficient, std)`` is the formula under test; ``beta(t)`` the
    SDE's noise rate. For x0 fixed the mean m(t) = c(t) x0 and the variance v(t) obey
    dc/dt = -1/2 beta c and dv/dt = -beta v + beta (Ito's formula), c(0) = 1, v(0) = 0; they are
    integrated from 0 with classical Runge-Kutta (4th order, step h; each t a multiple of h) and
    compared to ``atol``. Returns one dict per t.
    """
    def rhs(t, y):
        b = float(beta(torch.tensor(t, dtype=_F64)))
        return torch.tensor([-0.5 * b * y[0], b * (1 - y[1])], dtype=_F64)

    state, t, rows = torch.tensor([1.0, 0.0], dtype=_F64), 0.0, []  # (c, v) at time t
    for t_end in sorted(ts):
        for _ in range(round((t_end - t) / h)):
            k1 = rhs(t, state)
            k2 = rhs(t + h / 2, state + h / 2 * k1)
            k3 = rhs(t + h / 2, state + h / 2 * k2)
            k4 = rhs(t + h, state + h * k3)
            state, t = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + h
        c, std_ode = state[0].item(), state[1].sqrt().item()
        mean_coef, std = (torch.as_tensor(v).to(_F64).reshape(-1)[0].item()
                          for v in marginal(torch.tensor([t_end], dtype=_F64)))
        rows.append(dict(t=t_end, mean_coef=mean_coef, mean_coef_ode=c, std=std, std_ode=std_ode))
        assert abs(mean_coef - c) < atol, f"t = {t_end}: mean coefficient {mean_coef:.8f}, moment ODE {c:.8f}"
        assert abs(std - std_ode) < atol, f"t = {t_end}: std {std:.8f}, moment ODE {std_ode:.8f}"
    return rows


def sde_ode_marginals(samplers: dict, marginal: Callable, m: float = 0.5, s: float = 0.2, t_min: float = 1e-3,
                      n: int = 200_000, seed: int = 0, z_max: float = 4.0) -> dict:
    """Samplers of the reverse SDE and the probability-flow ODE, run with the exact score on Gaussian
    data x0 ~ N(m, s^2) (1D), must end at the exact marginal q(x_{t_min}) = N(a m, a^2 s^2 + sd^2).

    ``samplers``: name -> ``sample(x_1 [n, 1], score_fn) -> x at t_min``; ``marginal(t) -> (a, sd)``
    (checked on its own by ``vp_marginal``). The score of the Gaussian marginal is
    -(x - a m) / (a^2 s^2 + sd^2) and the start x_1 is drawn from the exact q(x_1) (so the prior's
    mismatch does not enter). The sample mean and standard deviation are compared with the exact
    ones by z-scores (standard errors std / sqrt(n) and std / sqrt(2 n)); asserts |z| < z_max.
    """
    def moments(t):
        a, sd = (torch.as_tensor(v, dtype=torch.float32) for v in marginal(torch.as_tensor(t, dtype=torch.float32)))
        return a, torch.sqrt(a ** 2 * s ** 2 + sd ** 2)

    def score_fn(x, t):  # the samplers give every example the same time: moments computed once
        assert (t == t[0]).all(), "this check's score function expects one time for the whole batch"
        a, std = moments(t[:1])
        return -(x - a * m) / std ** 2

    a1, std1 = moments(torch.tensor(1.0))
    a0, std0 = (v.item() for v in moments(torch.tensor(t_min)))
    x1 = a1 * m + std1 * torch.randn(n, 1, generator=torch.Generator().manual_seed(seed))
    out = {}
    for name, sample in samplers.items():
        x = torch.as_tensor(sample(x1.clone(), score_fn)).double().reshape(-1)
        z_mean = (x.mean().item() - a0 * m) / (std0 / math.sqrt(n))
        z_std = (x.std().item() - std0) / (std0 / math.sqrt(2 * n))
        out[name] = dict(mean=x.mean().item(), std=x.std().item(), z_mean=z_mean, z_std=z_std)
        assert abs(z_mean) < z_max and abs(z_std) < z_max, (
            f"{name}: mean {x.mean().item():.4f}, std {x.std().item():.4f}; exact {a0 * m:.4f}, {std0:.4f} "
            f"(z = {z_mean:.1f}, {z_std:.1f})")
    out["exact"] = dict(mean=a0 * m, std=std0)
    return out


def energy_distance(a: Tensor, b: Tensor) -> float:
    """The two-sample energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo), V-statistic.

    a [N, D], b [M, D]: zero in expectation (up to O(1/N)) when both come from the same law, positive
    otherwise. Compare it with its value between two samples of the target of the same sizes (the floor).
    """
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    return (2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()).item()


def cfm_minimiser(velocity: Callable, ts=(0.1, 0.5, 0.9), n: int = 1_000_000, bins: int = 10, seed: int = 0,
                  z_max: float = 4.0) -> dict:
    """The minimiser of the conditional flow-matching loss is E[x1 - x0 | x_t], checked by binned simulation.

    ``velocity(x [N, 1], t [N]) -> [N, 1]`` is the formula under test for x1 ~ ``MIXTURE_1D`` (data) and
    x0 ~ N(0, 1) (noise), x_t = (1 - t) x0 + t x1. For each t, (x0, x1) are simulated, the draws are
    binned by x_t (equal-count bins), and in every bin the mean of (x1 - x0) - velocity(x_t) must be
    zero: E[x1 - x0 - v*(x_t) | x_t in bin] = 0 holds exactly for any bin, so there is no bin-width
    bias. Each bin gives a z-score; under the formula, their sum of squares over all bins and t is
    chi-square with k = bins * len(ts) degrees of freedom, and (sum - k) / sqrt(2 k) must stay below
    ``z_max``. Returns "z" (that standardised statistic) and, per t, the bin centres, the simulated
    mean of x1 - x0 and the formula's mean per bin (to plot), and the bins' z-scores.
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in ts:
        x1, x0 = _draw_mixture(n, g), torch.randn(n, generator=g, dtype=_F64)
        x_t = (1 - t) * x0 + t * x1
        v = torch.as_tensor(velocity(x_t[:, None], torch.full((n,), t, dtype=_F64))).to(_F64).reshape(-1)
        groups = torch.argsort(x_t)[: n // bins * bins].reshape(bins, -1)  # equal-count bins of x_t
        u, v, xs = (x1 - x0)[groups], v[groups], x_t[groups]
        resid = u - v
        z = resid.mean(1) / (resid.std(1) / math.sqrt(groups.shape[1]))
        rows.append(dict(t=t, x=xs.mean(1), simulated=u.mean(1), formula=v.mean(1), z=z))
    k = bins * len(ts)
    chi2 = sum((row["z"] ** 2).sum().item() for row in rows)
    z_total = (chi2 - k) / math.sqrt(2 * k)
    assert z_total < z_max, (f"E[x1 - x0 | x_t] by simulation differs from the formula: sum of squared bin z-scores "
                             f"{chi2:.0f} for {k} bins (standardised {z_total:.1f})")
    return {"z": z_total, "rows": rows}


def cfm_loss_minimiser(cfm_loss: Callable, velocity: Callable, n: int = 400_000, seed: int = 0,
                       z_max: float = 4.0) -> dict:
    """Two properties of the conditional flow-matching loss ``cfm_loss(velocity_fn, x1, t=, x0=) -> [N]``.

    (a) A probe velocity_fn = 0 must be called at x_t = (1 - t) x0 + t x1 with time t, and the loss
        of each example is then (x1 - x0)^2 (1D data): the path and the target velocity.
    (b) The exact marginal velocity ``velocity(x [N, 1], t [N])`` of ``MIXTURE_1D`` (checked on its own
        by ``cfm_minimiser``) is a stationary point: d/d delta of the mean loss at velocity + delta h
        has mean zero for h = 1 and h = velocity (autograd, z-scores below z_max).
    """
    g = torch.Generator().manual_seed(seed)
    x1, x0, t = _draw_mixture(n, g)[:, None], torch.randn(n, 1, generator=g, dtype=_F64), torch.rand(n, generator=g,
                                                                                                       dtype=_F64)
    seen = {}

    def probe(x_t: Tensor, t_: Tensor) -> Tensor:
        seen.update(x=x_t, t=t_)
        return torch.zeros_like(x_t)

    zero = torch.as_tensor(cfm_loss(probe, x1, t=t, x0=x0)).reshape(-1)
    input_error = max((seen["x"] - ((1 - t[:, None]) * x0 + t[:, None] * x1)).abs().max().item(),
                      (seen["t"] - t).abs().max().item())
    assert input_error < 1e-9, f"the velocity is not evaluated at (x_t = (1 - t) x0 + t x1, t) (off by {input_error:.1e})"
    target_error = (zero - ((x1 - x0) ** 2)[:, 0]).abs().max().item()
    assert target_error < 1e-9, f"with velocity 0 the loss is not (x1 - x0)^2 (off by up to {target_error:.1e})"
    out = {"input_error": input_error, "target_error": target_error}
    out.update(_stationary(lambda fn: cfm_loss(fn, x1, t=t, x0=x0), velocity, n, z_max))
    return out


def binary_denoiser(z: Tensor, gamma: Tensor) -> Tensor:
    """E[x | z] for pixels x = -1 or +1 with probability 1/2 each and z = alpha x + sigma eps:
    tanh(alpha z / sigma^2), a function of (z, gamma) only (the optimal x_hat of VDM's loss for such data)."""
    g = gamma.reshape(-1, *([1] * (z.dim() - 1)))
    return torch.tanh(torch.sigmoid(-g).sqrt() * z / torch.sigmoid(g))


def vdm_endpoint_invariance(loss_fn: Callable, gammas: dict, gamma_min: float, gamma_max: float,
                            denoise: Callable = binary_denoiser, n: int = 8, dim: int = 16, seed: int = 0,
                            nodes: int = 400, rtol: float = 1e-4) -> dict:
    """VDM's continuous-time loss depends on the schedule only through its end points.

    ``loss_fn(x [n, dim], gamma, denoise, eps) -> [n]`` is the formula under test: E_t of L_inf's
    integrand for the fixed noise eps (e.g. ``vdm.diffusion_loss_quadrature``), and ``gammas`` maps
    names to schedules t -> gamma(t) that all run from gamma_min to gamma_max. The reference uses no
    schedule at all: 1/2 int_{SNR_min}^{SNR_max} ||x - denoise(z_v, -log v)||^2 dv with z_v = alpha_v x
    + sigma_v eps and alpha_v^2 = v / (1 + v), by Gauss-Legendre quadrature in log v (``nodes`` points).
    x are random +-1 pixels and ``denoise(z, gamma)`` a function of (z, gamma) only. Asserts every
    schedule's value within ``rtol`` (relative) of the reference, for every example; returns them.
    """
    import numpy as np

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, dim), generator=g).to(_F64) * 2 - 1
    eps = torch.randn(n, dim, generator=g, dtype=_F64)
    u, w = np.polynomial.legendre.leggauss(nodes)
    lo, hi = -gamma_max, -gamma_min  # log SNR runs over [lo, hi]
    reference = torch.zeros(n, dtype=_F64)
    for u_j, w_j in zip(u, w):
        lam = lo + (hi - lo) * (u_j + 1) / 2  # log v
        v = math.exp(lam)
        z = math.sqrt(v / (1 + v)) * x + math.sqrt(1 / (1 + v)) * eps
        mse = ((x - denoise(z, torch.full((n,), -lam, dtype=_F64))) ** 2).sum(1)
        reference += (hi - lo) / 2 * w_j * 0.5 * v * mse  # dv = v d(log v)
    out = {"reference": reference}
    for name, gamma in gammas.items():
        value = torch.as_tensor(loss_fn(x, gamma, denoise, eps)).to(_F64).reshape(-1)
        rel = ((value - reference).abs() / reference).max().item()
        out[name] = dict(value=value, max_rel_error=rel)
        assert rel < rtol, (f"schedule {name}: L_inf differs from the schedule-free integral over the SNR by a "
                            f"relative {rel:.1e} (tolerance {rtol:.0e})")
    return out
