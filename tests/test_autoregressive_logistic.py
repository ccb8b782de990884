"""The discretized logistic mixture (PixelCNN++'s output): a distribution over the K levels, checked
by brute-force sums, against the plain difference of CDFs, and by Monte Carlo from the continuous mixture."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.autoregressive import build_pixelcnn
from course_lib.autoregressive.logistic import (
    LOG_SCALE_MIN,
    logistic_mixture_log_prob,
    logistic_mixture_table,
    split_mixture,
)


def _params(n: int, M: int, seed: int = 0, log_s_range=(-4.0, 1.0)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, M, generator=g, dtype=torch.float64) * 2
    mu = torch.rand(n, M, generator=g, dtype=torch.float64) * 3 - 1.5      # some means outside [-1, 1]
    lo, hi = log_s_range
    log_s = torch.rand(n, M, generator=g, dtype=torch.float64) * (hi - lo) + lo
    return torch.cat([logits, mu, log_s], dim=1)                            # [n, 3M]


@pytest.mark.parametrize("K", [2, 8, 256])
def test_the_levels_probabilities_sum_to_one(K):
    params = _params(50, 4, log_s_range=(LOG_SCALE_MIN, 3.0))              # from the tightest scale to broad
    total = logistic_mixture_table(params, K).exp().sum(-1)
    torch.testing.assert_close(total, torch.ones(50, dtype=torch.float64), atol=1e-9, rtol=0)


def test_table_equals_the_difference_of_cdfs_computed_directly():
    # independent formula: sum_m pi_m [sigmoid(upper) - sigmoid(lower)], edge bins open, in float64
    K, M = 16, 3
    params = _params(20, M, seed=1)
    log_pi, mu, log_s = split_mixture(params)
    k = torch.arange(K, dtype=torch.float64)[:, None, None]                # [K, 1, 1]
    x, h = 2 * k / (K - 1) - 1, 1 / (K - 1)
    upper = torch.sigmoid((x + h - mu) / log_s.exp())                      # [K, n, M]
    lower = torch.sigmoid((x - h - mu) / log_s.exp())
    upper[-1], lower[0] = 1.0, 0.0
    direct = ((upper - lower) * log_pi.exp()).sum(-1).T                    # [n, K]
    torch.testing.assert_close(logistic_mixture_table(params, K).exp(), direct, atol=1e-12, rtol=1e-9)


def test_table_matches_monte_carlo_of_the_continuous_mixture():
    # draw x from the continuous mixture, round to the nearest level (clamped): the frequencies are P(k)
    K, M, n = 8, 3, 400_000
    params = _params(1, M, seed=2)[0]
    log_pi, mu, log_s = split_mixture(params)
    g = torch.Generator().manual_seed(3)
    m = torch.multinomial(log_pi.exp(), n, replacement=True, generator=g)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    x = mu[m] + log_s.exp()[m] * (u.log() - (-u).log1p())                 # inverse CDF of the logistic
    k = ((x + 1) * (K - 1) / 2).round().clamp(0, K - 1).long()
    freq = torch.bincount(k, minlength=K).double() / n
    p = logistic_mixture_table(params, K).exp()
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / n), (freq, p)


def test_log_prob_reads_the_table_at_the_levels():
    # consistency check between the two entry points (training reads one value, sampling the table)
    K, M = 256, 2
    params = torch.randn(3, 2, 3 * M, 4, 5, dtype=torch.float64)           # [N, C, 3M, H, W]
    levels = torch.randint(0, K, (3, 2, 4, 5))
    levels[0, 0, 0, :2] = torch.tensor([0, K - 1])                          # both edge bins
    table = logistic_mixture_table(params.movedim(2, -1), K)               # [N, C, H, W, K]
    torch.testing.assert_close(logistic_mixture_log_prob(params, levels, K),
                               table.gather(-1, levels[..., None])[..., 0])


def test_gradients_stay_finite_at_the_tightest_scale_and_far_means():
    K = 256
    params = torch.tensor([[0.0, 0.0, 5.0, -5.0, LOG_SCALE_MIN - 3, LOG_SCALE_MIN]], requires_grad=True)
    levels = torch.tensor([0, 1, 128, 254, 255])
    lp = logistic_mixture_log_prob(params[:, None, :, None, None].expand(5, 1, 6, 1, 1),
                                   levels[:, None, None, None], K)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(params.grad).all()


def test_a_mixture_pixelcnn_learns_a_sharp_two_valued_marginal():
    # a model with 2 components fits pixels that are mostly 0 and sometimes 255 within a few steps
    torch.manual_seed(0)
    model = build_pixelcnn((1, 4, 4), hidden=8, layers=1, first_kernel=3, mixtures=2)
    x = (torch.rand(64, 1, 4, 4) < 0.2).to(torch.uint8) * 255
    levels = model.preprocess(x)
    model.data_init(levels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = model.loss(levels)["loss"]
        loss.backward()
        opt.step()
    entropy = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))                 # nats: the best any model can do
    assert loss.item() < entropy + 0.05


def test_bad_mixture_options_are_refused():
    with pytest.raises(ValueError, match="mixtures"):
        build_pixelcnn((1, 4, 4), mixtures=0)
    with pytest.raises(ValueError, match="3M parameters"):
        split_mixture(torch.zeros(2, 4))
