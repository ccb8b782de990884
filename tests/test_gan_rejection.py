"""Discriminator rejection sampling: with the exact log ratio as D's logit, the kept samples follow p_data.

The target density is checked by Monte Carlo against the analytic normal (Kolmogorov-Smirnov statistic,
mean, standard deviation) and the acceptance rate against e^{-M}; M is found by brute force on a grid.
"""
import math

import pytest
import torch
from scipy import stats
from torch import nn

from course_lib.gan import GAN, build_dcgan
from course_lib.gan.rejection import acceptance_probability, drs_score, rejection_sample

MU, SIGMA = 0.5, 0.6  # p_data = N(0.5, 0.6^2); p_g = N(0, 1): the ratio p_data / p_g is bounded


def log_ratio(x):
    """l*(x) = log p_data(x) - log p_g(x), the logit of the optimal discriminator."""
    return torch.distributions.Normal(MU, SIGMA).log_prob(x) - torch.distributions.Normal(0.0, 1.0).log_prob(x)


def ks(x):
    """Kolmogorov-Smirnov statistic of the sample x against p_data."""
    return stats.kstest(x.double().numpy(), stats.norm(MU, SIGMA).cdf).statistic


def ks_bound(n):
    return 1.95 / math.sqrt(n)  # the 0.1% critical value of the one-sample KS statistic


class Identity(nn.Module):  # G(z) = s z with s = 1: samples of p_g = N(0, 1)
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))  # GAN.sample finds the device from G's parameters

    def forward(self, z, y=None):
        return self.s * z


class Critic(nn.Module):  # D's logit is a given function of x
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, y=None):
        return self.fn(x).reshape(len(x))


def test_exact_ratio_turns_samples_of_p_g_into_samples_of_p_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400_000, generator=gen, dtype=torch.float64)
    M = log_ratio(torch.linspace(-5, 5, 200_001, dtype=torch.float64)).max()  # brute force on a grid
    kept = x[torch.rand(len(x), generator=gen, dtype=torch.float64) < acceptance_probability(log_ratio(x), M)]
    rate, expected = len(kept) / len(x), math.exp(-M)
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / len(x))
    assert ks(kept) < ks_bound(len(kept))
    assert kept.mean().item() == pytest.approx(MU, abs=4 * SIGMA / math.sqrt(len(kept)))
    assert kept.std().item() == pytest.approx(SIGMA, rel=0.01)
    assert ks(x[: len(kept)]) > 10 * ks_bound(len(kept))  # without the rejection step: far from p_data


def test_gamma_zero_is_exp_of_the_logit_gap_and_gamma_lowers_acceptance():
    logits = torch.linspace(-8.0, 1.0, 50, dtype=torch.float64)
    a0 = acceptance_probability(logits, 1.0)
    torch.testing.assert_close(a0[:-1], torch.exp(logits[:-1] - 1.0), rtol=1e-5, atol=0)
    assert 0.99 < a0[-1].item() < 1.0  # at l = M: eps keeps F finite
    assert torch.isfinite(drs_score(torch.tensor([5.0]), 1.0)).all()  # l > M is clamped to M
    rates = [acceptance_probability(logits, 1.0, gamma).mean().item() for gamma in (-2.0, 0.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_rejection_sample_of_a_gan_with_the_optimal_discriminator_follows_p_data():
    gan = GAN(Identity(), Critic(log_ratio), latent_dim=1)
    torch.manual_seed(1)
    x, info = rejection_sample(gan, 20_000, burn_in=20_000, batch_size=5000, generator=torch.Generator().manual_seed(2))
    assert x.shape == (20_000, 1)
    assert ks(x[:, 0]) < ks_bound(len(x))
    true_M = log_ratio(torch.linspace(-5, 5, 200_001)).max().item()
    assert info["max_logit"] <= true_M + 1e-6  # estimated from draws: at most the true maximum
    assert info["acceptance_rate"] == pytest.approx(math.exp(-true_M), rel=0.05)
    sharp, sharp_info = rejection_sample(gan, 5000, gamma_quantile=0.95, burn_in=20_000, batch_size=5000)
    assert sharp_info["acceptance_rate"] < info["acceptance_rate"]
    assert sharp.std().item() < 0.9 * SIGMA  # a large gamma keeps the samples D rates highest: near l*'s peak


def test_rejection_sample_refuses_bad_settings_and_stops_when_it_accepts_too_little():
    gan = GAN(Identity(), Critic(lambda x: 30 * x), latent_dim=1)  # M far above almost every logit
    with pytest.raises(ValueError, match="gamma_quantile"):
        rejection_sample(gan, 10, gamma_quantile=1.0)
    with pytest.raises(ValueError, match="positive"):
        rejection_sample(gan, 0)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="lower gamma_quantile"):
        rejection_sample(gan, 1000, burn_in=10_000, max_draws=5000)


def test_rejection_sample_of_a_dcgan_gives_images():
    torch.manual_seed(0)
    gan = build_dcgan((1, 28, 28), base=8).eval()
    x, info = rejection_sample(gan, 16, burn_in=64, batch_size=32, gamma_quantile=0.5)
    assert x.shape == (16, 1, 28, 28) and x.abs().max() <= 1
    assert 0 < info["acceptance_rate"] <= 1 and info["draws"] >= 32


def test_conditional_rejection_sample_follows_each_class_and_keeps_the_class_shares():
    """p_g(x | y) = N(0, 1) for both classes, p_data(x | y) = N(mu_y, 0.6^2): with D's logit the exact
    log ratio per class, the kept x of each class follow its own p_data, and one M for both classes keeps
    the shares at 1/2, as the docstring derives."""
    mus = torch.tensor([0.5, -0.3])

    def conditional_log_ratio(x, y):
        return (torch.distributions.Normal(mus[y], SIGMA).log_prob(x.reshape(len(x)))
                - torch.distributions.Normal(0.0, 1.0).log_prob(x.reshape(len(x))))

    class ConditionalCritic(nn.Module):
        def forward(self, x, y=None):
            return conditional_log_ratio(x, y)

    gan = GAN(Identity(), ConditionalCritic(), latent_dim=1)
    torch.manual_seed(3)
    x, info = rejection_sample(gan, 20_000, num_classes=2, burn_in=20_000, batch_size=5000)
    y = info["y"]
    assert y.shape == (20_000,)
    assert abs(y.float().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(len(y))
    for c in (0, 1):
        xc = x[y == c, 0].double().numpy()
        assert stats.kstest(xc, stats.norm(mus[c].item(), SIGMA).cdf).statistic < ks_bound(len(xc))
    assert x[y == 0].mean() - x[y == 1].mean() == pytest.approx(0.8, abs=0.05)
