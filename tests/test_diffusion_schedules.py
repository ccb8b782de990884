"""Schedules and the time-indexing convention of course_lib.diffusion (entry t = lecture time t)."""
import math

import pytest
import torch

from course_lib.diffusion import GaussianDiffusion
from course_lib.diffusion.schedules import (alpha_bars_from_betas, cosine_beta_schedule, linear_beta_schedule,
                                            make_betas, snr)


def test_linear_schedule_endpoints_and_indexing():
    betas = linear_beta_schedule(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1001,)
    assert betas[0] == 0  # entry 0 is the clean data
    assert math.isclose(betas[1].item(), 1e-4) and math.isclose(betas[1000].item(), 0.02)  # beta_1, beta_T
    assert torch.all(betas[2:] > betas[1:-1])  # rising
    alpha_bars = alpha_bars_from_betas(betas)
    assert alpha_bars[0] == 1.0
    # alpha_bar_t is the product of (1 - beta_s) for s = 1..t, computed here with a Python loop
    product = 1.0
    for t in range(1, 1001):
        product *= 1.0 - (1e-4 + (0.02 - 1e-4) * (t - 1) / 999)
        if t in (1, 10, 500, 1000):
            assert math.isclose(alpha_bars[t].item(), product, rel_tol=1e-10)
    assert alpha_bars[1000] < 1e-4  # x_T is almost pure noise


def test_cosine_schedule_follows_nichol_dhariwal():
    T, s = 1000, 0.008
    betas = cosine_beta_schedule(T, s)
    alpha_bars = alpha_bars_from_betas(betas)
    assert betas[0] == 0 and alpha_bars[0] == 1.0
    for t in (1, 100, 500, 900):  # alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2)
        f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        assert math.isclose(alpha_bars[t].item(), f(t) / f(0), rel_tol=1e-9)
    assert betas.max() <= 0.999 and math.isclose(betas[T].item(), 0.999)  # the last beta is clipped


def test_snr_and_make_betas():
    alpha_bars = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    torch.testing.assert_close(snr(alpha_bars)[1:], torch.tensor([1.0, 0.25], dtype=torch.float64))
    assert torch.isinf(snr(alpha_bars)[0])
    torch.testing.assert_close(make_betas("cosine", 10), cosine_beta_schedule(10))
    with pytest.raises(ValueError, match="linear"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="beta_1"):
        linear_beta_schedule(10, beta_1=0.1, beta_T=0.01)


def test_gaussian_diffusion_buffers_use_lecture_time():
    diffusion = GaussianDiffusion(torch.nn.Identity(), data_shape=(1,), T=1000)
    assert diffusion.T == 1000 and diffusion.betas.shape == (1001,)
    assert diffusion.alpha_bars[0] == 1.0 and diffusion.betas[0] == 0.0
    assert math.isclose(diffusion.betas[1].item(), 1e-4, rel_tol=1e-6)
    assert math.isclose(diffusion.betas[1000].item(), 0.02, rel_tol=1e-6)
    assert diffusion.posterior_variance[1] == 0  # beta_tilde_1 = 0: x_0 is known given x_1 and x_0
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion(torch.nn.Identity(), torch.linspace(1e-4, 0.02, 10), data_shape=(1,))  # no entry 0
    with pytest.raises(ValueError, match=r"0\.\.1000"):
        diffusion.q_sample(torch.zeros(2, 1), torch.tensor([1, 1001]))
    torch.testing.assert_close(diffusion.q_sample(torch.ones(2, 1), 0), torch.ones(2, 1))  # x_0 itself
    with pytest.raises(ValueError, match=r"1\.\.1000"):  # the reverse process starts at t = 1
        diffusion.p_sample(torch.zeros(2, 1), 0)


def test_plot_schedules_draws_both():
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from course_lib.diffusion.schedules import plot_schedules
    fig = plot_schedules(T=100)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
