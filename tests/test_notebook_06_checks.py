"""The independent checks of notebook 06 catch a 1% error (the mutation requirement of issue 15).

Notebook 06 runs the functions of ``course_lib.diffusion.checks`` on its own few-line formulas and
on ``GaussianDiffusion``. Here the same functions run on the correct library (must pass) and on
copies with one coefficient 1% off: the posterior mean coefficients, the weight lambda_t of the
eps-loss, and the sampling step (the eps coefficient, 1/sqrt(alpha_t) through the posterior
coefficient, sigma_t). Every mutant must fail at least one check, and the notebook must still call
the checks (so a check removed from the notebook fails here). About 10 s on one core.
"""
import json
import math
from pathlib import Path

import pytest
import torch

from course_lib.diffusion import GaussianDiffusion, checks
from course_lib.diffusion.schedules import linear_beta_schedule

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_diffusion_ddpm.ipynb"
T = 1000
BETAS = linear_beta_schedule(T)  # float64 [T + 1], the notebook's schedule
ALPHAS = 1 - BETAS
ALPHA_BARS = torch.cumprod(ALPHAS, 0)
M, S = -1.0, 1.0  # Gaussian data for the sampler check (s = 1: sigma_t^2 = beta_t is the exact reverse variance)


class EpsStar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.f = checks.gaussian_eps_star(ALPHA_BARS, M, S)

    def forward(self, x_t, t, y=None):
        return self.f(x_t, t.view(-1, 1))


def library(mutate=None) -> GaussianDiffusion:
    process = GaussianDiffusion(EpsStar(), data_shape=(1,), T=T, variance="beta")
    if mutate is not None:
        mutate(process)
    return process


def run_checks(process: GaussianDiffusion) -> dict:
    """The notebook's checks on the library, through the notebook's adapters; name -> passed?"""

    def posterior(x0, x_t, t):
        mean, var, _ = process.q_posterior(x0.view(1, 1).float(), x_t.view(1, 1).float(), t)
        return mean, var

    def step(x_t, t, z):
        out = process.p_mean_variance(x_t.view(-1, 1).float(), t, clip_x0=False)
        return (out["mean"] + (t > 1) * out["log_variance"].mul(0.5).exp() * z.view(-1, 1).float()).view(-1).double()

    results = {}
    for name, run in {
        "posterior_on_grid": lambda: checks.posterior_on_grid(posterior, ALPHA_BARS),
        "eps_weight_from_kl": lambda: checks.eps_weight_from_kl(process.eps_loss_weight, ALPHA_BARS, BETAS, rtol=1e-4),
        "sampler_on_gaussian": lambda: checks.sampler_on_gaussian(step, T, M, S),
    }.items():
        try:
            run()
            results[name] = True
        except AssertionError:
            results[name] = False
    return results


def scale_buffer(name, factor):
    def mutate(process):
        getattr(process, name).mul_(factor)
    return mutate


def scale_weight(process):
    original = process.eps_loss_weight
    process.eps_loss_weight = lambda t: 1.01 * original(t)


MUTANTS = {
    # posterior q(x_{t-1} | x_t, x_0): the coefficient of x_0, of x_t
    "posterior coefficient of x0 +1%": (scale_buffer("posterior_mean_coef_x0", 1.01), "posterior_on_grid"),
    "posterior coefficient of x_t +1%": (scale_buffer("posterior_mean_coef_xt", 1.01), "posterior_on_grid"),
    # the weight lambda_t of ||eps - eps_theta||^2
    "eps weight lambda_t +1%": (scale_weight, "eps_weight_from_kl"),
    # the sampling step: the eps coefficient beta_t / sqrt(1 - alpha_bar_t) (through x0_pred), sigma_t
    "sampling step, eps coefficient +1%": (scale_buffer("sqrt_recip_alpha_bars_minus_one", 1.01), "sampler_on_gaussian"),
    "sampling step, 1/sqrt(alpha_bar_t) +1%": (scale_buffer("sqrt_recip_alpha_bars", 1.01), "sampler_on_gaussian"),
    "sampling step, sigma_t +1%": (lambda p: p.reverse_log_variance.add_(2 * math.log(1.01)), "sampler_on_gaussian"),
}


def test_the_correct_library_passes_every_check():
    assert run_checks(library()) == {"posterior_on_grid": True, "eps_weight_from_kl": True,
                                     "sampler_on_gaussian": True}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a_one_percent_error_fails_a_check(mutant):
    mutate, must_fail = MUTANTS[mutant]
    results = run_checks(library(mutate))
    assert not results[must_fail], f"{mutant}: {must_fail} still passes ({results})"


def test_a_one_percent_error_in_the_inline_formulas_fails():
    """The same for the notebook's own few-line formulas (x0-form posterior, lambda_t, Algorithm 2 step)."""
    betas, alphas, alpha_bars = BETAS, ALPHAS, ALPHA_BARS

    def q_posterior(x0, x_t, t, c=1.0):
        mean = (c * alpha_bars[t - 1].sqrt() * betas[t] / (1 - alpha_bars[t]) * x0
                + alphas[t].sqrt() * (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t]) * x_t)
        return mean, (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t]) * betas[t]

    def eps_weight(t, c=1.0):
        return c * betas[t] ** 2 / (2 * betas[t] * alphas[t] * (1 - alpha_bars[t]))

    eps_star = checks.gaussian_eps_star(alpha_bars, M, S)

    def p_step(x_t, t, z, c=1.0):
        return (x_t - c * betas[t] / (1 - alpha_bars[t]).sqrt() * eps_star(x_t, t)) / alphas[t].sqrt() \
            + betas[t].sqrt() * z * (t > 1)

    checks.posterior_on_grid(q_posterior, alpha_bars)
    checks.eps_weight_from_kl(eps_weight, alpha_bars, betas)
    checks.sampler_on_gaussian(p_step, T, M, S)
    with pytest.raises(AssertionError):
        checks.posterior_on_grid(lambda x0, x_t, t: q_posterior(x0, x_t, t, c=1.01), alpha_bars)
    with pytest.raises(AssertionError):
        checks.eps_weight_from_kl(lambda t: eps_weight(t, c=1.01), alpha_bars, betas)
    with pytest.raises(AssertionError):
        checks.sampler_on_gaussian(lambda x, t, z: p_step(x, t, z, c=1.01), T, M, S)


def test_the_discretized_decoder_check_catches_a_shifted_bin():
    from course_lib.distributions import discretized_gaussian_log_likelihood as decoder

    checks.discretized_decoder_mass(decoder)
    with pytest.raises(AssertionError):  # bins 1% too wide: the masses no longer match the integrals
        checks.discretized_decoder_mass(lambda x, mean, log_var: decoder(x, mean, log_var, bins=254))


def test_the_notebook_runs_these_checks():
    source = "\n".join("".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"]
                       if c["cell_type"] == "code")
    for call in ["checks.posterior_on_grid(q_posterior", "checks.posterior_on_grid(library_posterior",
                 "checks.eps_weight_from_kl(lambda t: eps_weight", "checks.eps_weight_from_kl(lib.eps_loss_weight",
                 "checks.sampler_on_gaussian(library_step", "checks.sampler_on_gaussian(",
                 "checks.discretized_decoder_mass(discretized_gaussian_log_likelihood"]:
        assert call in source, f"notebook 06 no longer calls {call}"
