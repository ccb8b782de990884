"""The independent checks of notebook 07 (course_lib.diffusion.checks_07) pass on the right
formulas and fail on copies with a 1% error: a check that cannot fail would prove nothing."""
import pytest

from course_lib.diffusion.checks_07 import cfg_identity, ddim_marginals, ddim_variance_is_posterior
from course_lib.diffusion.ddim import ddim_sigma, ddim_step
from course_lib.diffusion.schedules import alpha_bars_from_betas, linear_beta_schedule

ALPHA_BARS = alpha_bars_from_betas(linear_beta_schedule(1000))


def step(x_t, eps, ab_t, ab_s, eta, z, direction=1.0, noise=1.0):
    x0_pred = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    sigma = ddim_sigma(ab_t, ab_s, eta)
    return ab_s.sqrt() * x0_pred + direction * (1 - ab_s - sigma ** 2).sqrt() * eps + noise * sigma * z


def test_the_library_step_passes():
    ddim_marginals(lambda *a: ddim_step(*a)[0], ALPHA_BARS)
    ddim_variance_is_posterior(ddim_sigma, ALPHA_BARS)
    cfg_identity(lambda c, u, w: (1 + w) * c - w * u)


@pytest.mark.parametrize("mutant", [dict(direction=1.01), dict(noise=1.05)], ids=["direction+1%", "noise+5%"])
def test_marginals_catch_a_wrong_step(mutant):
    ddim_marginals(step, ALPHA_BARS)  # the inline form passes
    with pytest.raises(AssertionError, match="x_s has mean"):
        ddim_marginals(lambda *a: step(*a, **mutant), ALPHA_BARS)


def test_posterior_variance_catches_a_wrong_sigma():
    with pytest.raises(AssertionError, match="posterior variance"):
        ddim_variance_is_posterior(lambda t, s, eta: 1.01 * ddim_sigma(t, s, eta), ALPHA_BARS)
    with pytest.raises(AssertionError, match="posterior variance"):  # the square roots swapped in
        ddim_variance_is_posterior(lambda t, s, eta: eta * ((1 - s) / (1 - t) * (1 - t / s)), ALPHA_BARS)


@pytest.mark.parametrize("combine", [lambda c, u, w: (1 + w) * c - 1.01 * w * u,
                                     lambda c, u, w: (1 + 1.01 * w) * c - w * u,
                                     lambda c, u, w: c + w * (c - u) * 0.99],
                         ids=["uncond+1%", "cond+1%", "difference-1%"])
def test_cfg_identity_catches_a_wrong_combination(combine):
    with pytest.raises(AssertionError, match="guided score"):
        cfg_identity(combine)
