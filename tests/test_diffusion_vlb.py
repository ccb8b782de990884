"""The variational bound L_vlb of GaussianDiffusion on 1-D Gaussian data, where everything is known exactly.

For data x_0 ~ N(m, s^2), every x_t is Gaussian: x_t ~ N(sqrt(alpha_bar_t) m, v_t) with
v_t = alpha_bar_t s^2 + 1 - alpha_bar_t, and eps and x_t are jointly Gaussian with
Cov(eps, x_t) = sqrt(1 - alpha_bar_t). So the best noise predictor (in mean squared error) is linear:

    eps*(x_t, t) = E[eps | x_t] = sqrt(1 - alpha_bar_t) (x_t - sqrt(alpha_bar_t) m) / v_t.

With it, mu_theta(x_t, t) = E[x_{t-1} | x_t] exactly, and the true reverse kernel q(x_{t-1} | x_t) has
variance v_{t-1} beta_t / v_t. When s = 1 and m = 0 (v_t = 1 for all t) that variance is beta_t, so
with sigma_t^2 = beta_t the model's joint p_theta(x_{0:T}) IS the forward process's joint q(x_{0:T}):
the bound is tight, L_vlb(x_0) = -log N(x_0; 0, 1) for every x_0. For other (m, s) the model is a
linear-Gaussian chain whose marginal p_theta(x_0) we compute independently, and L_vlb >= -log p_theta(x_0).
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from course_lib.diffusion import GaussianDiffusion

T = 10
BETAS = torch.cat([torch.zeros(1), torch.linspace(0.05, 0.4, T, dtype=torch.float64)])  # a short chain
ALPHA_BARS = torch.cumprod(1 - BETAS, 0)


class OptimalEps(nn.Module):
    """eps*(x_t, t) = E[eps | x_t] for data x_0 ~ N(m, s^2) (see the module docstring)."""

    def __init__(self, m, s):
        super().__init__()
        self.m, self.s = m, s

    def forward(self, x_t, t, y=None):
        ab = ALPHA_BARS[t].to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        v = ab * self.s**2 + 1 - ab
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * self.m) / v


def model_nll(x0, m, s, variance):
    """-log p_theta(x_0) of the linear-Gaussian reverse chain, by propagating its mean and variance (numpy)."""
    betas, ab = BETAS.numpy(), ALPHA_BARS.numpy()
    v = ab * s**2 + 1 - ab  # Var q(x_t)
    mean, var = 0.0, 1.0  # p(x_T) = N(0, 1)
    for t in range(T, 0, -1):
        # E[x_{t-1} | x_t] = m_{t-1} + sqrt(alpha_t) v_{t-1} / v_t (x_t - m_t): Gaussian conditioning
        slope = math.sqrt(1 - betas[t]) * v[t - 1] / v[t]
        offset = math.sqrt(ab[t - 1]) * m - slope * math.sqrt(ab[t]) * m
        if variance == "beta":
            sigma2 = betas[t]
        else:  # beta_tilde_t, with beta_tilde_1 = 0 replaced by beta_tilde_2
            k = max(t, 2)
            sigma2 = (1 - ab[k - 1]) / (1 - ab[k]) * betas[k]
        mean, var = slope * mean + offset, slope**2 * var + sigma2
    return -stats.norm.logpdf(x0, mean, math.sqrt(var))


def bound_by_group(diffusion, x0_values, n, **kwargs):
    """L_vlb of each x0 value, averaged over n independent draws, and the standard error."""
    x0 = torch.tensor(x0_values).repeat_interleave(n)[:, None]  # (len * n, 1)
    total = diffusion.vlb_terms(x0, decoder="gaussian", generator=torch.Generator().manual_seed(0), **kwargs)["total"]
    total = total.double().reshape(len(x0_values), n)
    return total.mean(1).numpy(), (total.std(1) / math.sqrt(n)).numpy()


def test_bound_is_tight_when_the_model_is_the_true_reverse_process():
    diffusion = GaussianDiffusion(OptimalEps(0.0, 1.0), BETAS, data_shape=(1,), variance="beta")
    x0_values = [-1.5, 0.2, 2.0]
    bound, se = bound_by_group(diffusion, x0_values, 20_000)
    true_nll = -stats.norm.logpdf(x0_values)
    assert np.all(np.abs(bound - true_nll) < 5 * se + 1e-3), (bound, true_nll, se)
    assert np.all(se < 0.02)  # the test has power: a gap of 0.1 nats would be caught


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_bound_is_above_the_models_nll(variance):
    m, s = 0.3, 0.5
    diffusion = GaussianDiffusion(OptimalEps(m, s), BETAS, data_shape=(1,), variance=variance)
    x0_values = [-0.4, 0.3, 1.1]
    bound, se = bound_by_group(diffusion, x0_values, 40_000)
    nll = np.array([model_nll(x, m, s, variance) for x in x0_values])
    gap = bound - nll  # = E_q KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0)) >= 0
    # sigma_t^2 differs from the true reverse variance v_{t-1} beta_t / v_t, so the gap is
    # strictly positive here (unlike the tight case above), and small (the means are exact)
    assert np.all(gap > 5 * se), (bound, nll, se)
    assert np.all(gap < 0.5), gap


def test_bound_equals_monte_carlo_over_whole_trajectories():
    # L_vlb = E_q(x_{1:T}|x_0)[log q(x_{1:T}|x_0) - log p_theta(x_{0:T})], estimated from forward
    # trajectories without any KL formula: an independent estimate of the same number.
    m, s, x0_value, n = 0.3, 0.5, 0.8, 40_000
    diffusion = GaussianDiffusion(OptimalEps(m, s), BETAS, data_shape=(1,), variance="beta")
    betas, ab = BETAS.numpy(), ALPHA_BARS.numpy()
    v = ab * s**2 + 1 - ab
    rng = np.random.default_rng(0)
    x = np.full(n, x0_value)
    log_ratio = np.zeros(n)
    for t in range(1, T + 1):
        x_next = math.sqrt(1 - betas[t]) * x + math.sqrt(betas[t]) * rng.standard_normal(n)
        log_ratio += stats.norm.logpdf(x_next, math.sqrt(1 - betas[t]) * x, math.sqrt(betas[t]))  # q(x_t|x_{t-1})
        mu = math.sqrt(ab[t - 1]) * m + math.sqrt(1 - betas[t]) * v[t - 1] / v[t] * (x_next - math.sqrt(ab[t]) * m)
        log_ratio -= stats.norm.logpdf(x, mu, math.sqrt(betas[t]))  # p_theta(x_{t-1}|x_t)
        x = x_next
    log_ratio -= stats.norm.logpdf(x)  # p(x_T) = N(0, 1)
    mc, mc_se = log_ratio.mean(), log_ratio.std() / math.sqrt(n)
    bound, se = bound_by_group(diffusion, [x0_value], n)
    assert abs(bound[0] - mc) < 5 * math.hypot(se[0], mc_se), (bound, mc, se, mc_se)


def test_subset_of_t_is_an_unbiased_estimate():
    diffusion = GaussianDiffusion(OptimalEps(0.0, 1.0), BETAS, data_shape=(1,), variance="beta")
    g = torch.Generator().manual_seed(1)
    estimates = []
    for _ in range(100):
        out = diffusion.vlb_terms(torch.full((500, 1), 0.7), decoder="gaussian", num_t=3, generator=g)
        assert out["t"][0] == 1 and len(set(out["t"].tolist())) == 3 and out["terms"].shape == (500, 3)
        assert out["weights"].sum() == T  # every term of the sum is represented once on average
        estimates.append(out["total"].double().mean().item())
    estimates = np.array(estimates)
    se = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() + stats.norm.logpdf(0.7)) < 5 * se + 1e-3
    # with K = T the estimator is the full sum
    out = diffusion.vlb_terms(torch.zeros(4, 1), decoder="gaussian", num_t=T)
    assert out["t"].tolist() == list(range(1, T + 1)) and out["weights"].tolist() == [1.0] * T


def test_terms_layout_prior_and_discretized_decoder():
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(OptimalEps(0.0, 0.5), BETAS, data_shape=(1, 2, 2), variance="beta")
    x0 = (torch.randint(0, 256, (3, 1, 2, 2)).float() / 127.5 - 1)  # 8-bit values in [-1, 1]
    out = diffusion.vlb_terms(x0, generator=torch.Generator().manual_seed(5))
    assert out["t"].tolist() == list(range(1, T + 1))
    assert out["terms"].shape == (3, T) and out["mse"].shape == (3, T) and out["prior"].shape == (3,)
    torch.testing.assert_close(out["total"], out["prior"] + out["terms"].sum(1))
    # L_T = KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)), summed over the 4 pixels, from torch.distributions
    q_T = torch.distributions.Normal(ALPHA_BARS[T].sqrt() * x0.double(), (1 - ALPHA_BARS[T]).sqrt())
    prior = torch.distributions.kl_divergence(q_T, torch.distributions.Normal(0.0, 1.0)).sum((1, 2, 3))
    torch.testing.assert_close(out["prior"].double(), prior, rtol=1e-4, atol=1e-6)
    # L_0 = -log P(x_0 | x_1): redo t = 1 (the first time evaluated) with the same noise, then
    # integrate the Gaussian over each pixel's bin with scipy
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    x1 = diffusion.q_sample(x0, 1, eps)
    mean = diffusion.p_mean_variance(x1, 1, clip_x0=False)["mean"].double().numpy()
    sigma = math.sqrt(BETAS[1])
    xv = x0.double().numpy()
    upper = np.where(xv > 1 - 1 / 255, np.inf, xv + 1 / 255)
    lower = np.where(xv < -1 + 1 / 255, -np.inf, xv - 1 / 255)
    mass = stats.norm.cdf(upper, mean, sigma) - stats.norm.cdf(lower, mean, sigma)
    expected = -np.log(mass).reshape(3, -1).sum(1)
    np.testing.assert_allclose(out["terms"][:, 0].double().numpy(), expected, rtol=1e-4)
    # bits per dimension = total / (D ln 2), D = 4
    bpd = diffusion.nll_bits_per_dim(x0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(bpd, out["total"] / (4 * math.log(2)), rtol=1e-5, atol=1e-6)


def test_vlb_rejects_bad_options():
    diffusion = GaussianDiffusion(OptimalEps(0.0, 1.0), BETAS, data_shape=(1,))
    with pytest.raises(ValueError, match="decoder"):
        diffusion.vlb_terms(torch.zeros(2, 1), decoder="logistic")
    for bad in (1, T + 1):
        with pytest.raises(ValueError, match="num_t"):
            diffusion.vlb_terms(torch.zeros(2, 1), num_t=bad)
