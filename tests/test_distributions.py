"""course_lib.distributions against independent computations (torch.distributions, Monte Carlo, scipy)."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from course_lib.distributions import discretized_gaussian_log_likelihood, gaussian_kl, standard_normal_cdf


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean1, log_var1, mean2, log_var2 = torch.randn(4, 50, generator=g, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean1, torch.exp(0.5 * log_var1)),
        torch.distributions.Normal(mean2, torch.exp(0.5 * log_var2)))
    torch.testing.assert_close(gaussian_kl(mean1, log_var1, mean2, log_var2), expected)


def test_gaussian_kl_matches_monte_carlo():
    # KL(p || q) = E_p[log p(x) - log q(x)], estimated from 400k draws of p
    p = torch.distributions.Normal(torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64))
    q = torch.distributions.Normal(torch.tensor(-0.5, dtype=torch.float64), torch.tensor(1.3, dtype=torch.float64))
    torch.manual_seed(1)
    x = p.sample((400_000,))
    log_ratio = p.log_prob(x) - q.log_prob(x)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(len(x))
    exact = gaussian_kl(torch.tensor(0.3), torch.tensor(math.log(0.49)),
                        torch.tensor(-0.5), torch.tensor(math.log(1.69)))
    assert abs(exact.item() - mc) < 5 * se
    assert exact.item() > 0.1  # a non-trivial KL, so the comparison means something


def test_gaussian_kl_zero_for_equal_and_broadcasts():
    mean = torch.randn(3, 4)
    assert torch.allclose(gaussian_kl(mean, torch.zeros(1), mean, torch.zeros(1)), torch.zeros(3, 4))
    assert gaussian_kl(mean, torch.tensor(0.0), torch.zeros(3, 4), torch.tensor(0.0)).shape == (3, 4)


def test_standard_normal_cdf_matches_scipy():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    np.testing.assert_allclose(standard_normal_cdf(x).numpy(), stats.norm.cdf(x.numpy()), rtol=1e-12, atol=1e-15)


GRID = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 256 values of 8-bit data scaled to [-1, 1]


@pytest.mark.parametrize("mean, std", [(0.0, 0.5), (0.93, 0.01), (-1.2, 0.3), (0.2, 5.0), (0.999, 1e-3)])
def test_discretized_gaussian_sums_to_one_over_the_256_values(mean, std):
    log_p = discretized_gaussian_log_likelihood(GRID, torch.tensor(mean, dtype=torch.float64),
                                                torch.tensor(2 * math.log(std), dtype=torch.float64))
    assert torch.isfinite(log_p).all()
    assert abs(log_p.exp().sum().item() - 1.0) < 1e-9


@pytest.mark.parametrize("mean, std, bins", [(0.137, 0.05, [140, 145, 146, 150, 160]),  # interior bins
                                              (-0.98, 0.03, [0, 1, 3]),  # the lower edge bin reaches -inf
                                              (0.99, 0.02, [252, 254, 255])])  # the upper edge bin reaches +inf
def test_discretized_gaussian_matches_numerical_integral_of_the_density(mean, std, bins):
    delta = 2 / 255
    for k in bins:
        x = GRID[k].item()
        lower = -np.inf if k == 0 else x - delta / 2
        upper = np.inf if k == 255 else x + delta / 2
        mass, _ = integrate.quad(lambda u: stats.norm.pdf(u, mean, std), lower, upper, epsabs=1e-13)
        log_p = discretized_gaussian_log_likelihood(torch.tensor(x, dtype=torch.float64),
                                                    torch.tensor(mean, dtype=torch.float64),
                                                    torch.tensor(2 * math.log(std), dtype=torch.float64))
        assert mass > 1e-3  # the chosen bins carry real mass
        assert math.isclose(log_p.exp().item(), mass, rel_tol=1e-7), k


def test_discretized_gaussian_is_stable_far_in_the_tails():
    # bins 14 sigma from the mean: Phi(b) - Phi(a) would round to 0 there, the log must stay accurate
    x = torch.tensor([0.7, -0.7], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(x, torch.zeros(2, dtype=torch.float64),
                                                torch.full((2,), 2 * math.log(0.05), dtype=torch.float64))
    reference = np.log(stats.norm.sf(0.7 - 1 / 255, 0, 0.05) - stats.norm.sf(0.7 + 1 / 255, 0, 0.05))
    assert np.isfinite(reference) and reference < -90
    np.testing.assert_allclose(log_p.numpy(), [reference, reference], rtol=1e-6)


def test_discretized_gaussian_rejects_bad_input():
    with pytest.raises(TypeError, match="to_signed"):
        discretized_gaussian_log_likelihood(torch.tensor([3], dtype=torch.uint8), torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        discretized_gaussian_log_likelihood(torch.tensor([3.0]), torch.tensor(0.0), torch.tensor(0.0))
