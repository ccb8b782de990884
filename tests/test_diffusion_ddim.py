"""DDIM, its inversion and naive step skipping (course_lib.diffusion.ddim), checked on data whose
noise predictor is exact: 1D Gaussian data N(m, s^2), where E[eps | x_t] is known in closed form."""
import math

import pytest
import torch
from torch import nn

from course_lib.diffusion import GaussianDiffusion
from course_lib.diffusion.checks import gaussian_eps_star
from course_lib.diffusion.checks_07 import ddim_marginals, ddim_variance_is_posterior
from course_lib.diffusion.ddim import (
    ddim_invert,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    naive_skip_sample,
    timesteps,
)

M, S = 0.5, 0.3


class GaussianEps(nn.Module):
    """The exact eps_theta for data N(M, S^2): E[eps | x_t]."""

    def __init__(self, alpha_bars):
        super().__init__()
        self.eps_star = gaussian_eps_star(alpha_bars.double(), M, S)

    def forward(self, x_t, t, y=None):
        return self.eps_star(x_t, t[:, None]).float()


@pytest.fixture(scope="module")
def diffusion():
    d = GaussianDiffusion(nn.Identity(), data_shape=(1,))
    d.model = GaussianEps(d.alpha_bars)
    return d


def test_timesteps():
    assert timesteps(1000, 4) == [1000, 750, 500, 250, 0]
    assert timesteps(10, 10) == list(range(10, -1, -1))
    quad = timesteps(1000, 50, "quadratic")
    assert quad[0] == 1000 and quad[-1] == 0 and len(set(quad)) == 51 and quad == sorted(quad, reverse=True)
    gaps = [a - b for a, b in zip(quad[:-1], quad[1:])]
    assert gaps[0] > gaps[-2], "quadratic spacing is denser near the data"
    with pytest.raises(ValueError, match="steps must lie"):
        timesteps(100, 101)
    with pytest.raises(ValueError, match="unknown spacing"):
        timesteps(100, 10, "cubic")


def test_step_keeps_the_marginals_by_simulation(diffusion):
    def step(x_t, eps, ab_t, ab_s, eta, z):
        return ddim_step(x_t, eps, ab_t, ab_s, eta, z)[0]
    out = ddim_marginals(step, diffusion.alpha_bars.double(), n=100_000)
    assert out["max_abs_z"] < 5


def test_eta_one_is_the_posterior_variance(diffusion):
    ddim_variance_is_posterior(ddim_sigma, diffusion.alpha_bars.double())
    # and at s = t - 1 it is DDPM's beta_tilde_t (the library's buffer: a consistency check)
    ab = diffusion.alpha_bars.double()
    t = torch.arange(2, 1001)
    torch.testing.assert_close(ddim_sigma(ab[t], ab[t - 1], 1.0) ** 2, diffusion.posterior_variance[t].double(),
                               rtol=1e-3, atol=0)  # the buffer is float32


def test_eta_one_on_every_step_is_ddpm_with_beta_tilde():
    d = GaussianDiffusion(nn.Identity(), data_shape=(1,), T=200, variance="beta_tilde")
    d.model = GaussianEps(d.alpha_bars)
    a = ddim_sample(d, 4000, 200, eta=1.0, clip_x0=False, generator=torch.Generator().manual_seed(3))
    b = d.sample(4000, clip_x0=False, progress=False, generator=torch.Generator().manual_seed(3))
    assert (a - b).abs().max() < 1e-3  # the same noise draws: the same chain


def test_ddim_turns_noise_into_the_data_and_improves_with_steps(diffusion):
    errors = {}
    for steps in (5, 20, 100, 1000):
        x = ddim_sample(diffusion, 50_000, steps, clip_x0=False, generator=torch.Generator().manual_seed(0))
        assert abs(x.mean().item() - M) < 0.01
        errors[steps] = abs(x.std().item() / S - 1)
    assert errors[1000] < 0.015, errors
    assert errors[1000] < errors[100] < errors[20] < errors[5], errors


def test_deterministic_at_eta_zero(diffusion):
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(1))
    a = ddim_sample(diffusion, 64, 20, x_T=x_T, clip_x0=False)
    b = ddim_sample(diffusion, 64, 20, x_T=x_T, clip_x0=False)
    assert torch.equal(a, b)
    c = ddim_sample(diffusion, 64, 20, x_T=x_T, eta=1.0, clip_x0=False, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(a, c)


def test_naive_skipping_leaves_noise_behind(diffusion):
    naive = naive_skip_sample(diffusion, 50_000, 20, clip=False, generator=torch.Generator().manual_seed(0))
    ddim = ddim_sample(diffusion, 50_000, 20, clip_x0=False, generator=torch.Generator().manual_seed(0))
    assert naive.std() > 2.5 * S, "20 naive jumps should end far noisier than the data"
    assert abs(ddim.std().item() / S - 1) < 0.3
    full = naive_skip_sample(diffusion, 50_000, 1000, clip=False, generator=torch.Generator().manual_seed(0))
    assert abs(full.mean().item() - M) < 0.01 and abs(full.std().item() / S - 1) < 0.02  # k = 1 is DDPM


def test_inversion_round_trip_improves_with_steps(diffusion):
    x0 = M + S * torch.randn(2000, 1, generator=torch.Generator().manual_seed(4))
    errors = []
    for steps in (10, 50, 200):
        x_T = ddim_invert(diffusion, x0, steps)
        assert abs(x_T.std().item() - 1) < 0.1, "the codes should look like N(0, 1)"
        back = ddim_sample(diffusion, 2000, steps, x_T=x_T, clip_x0=False)
        errors.append((back - x0).abs().mean().item())
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.02, errors


def test_trajectory_and_labels():
    d = GaussianDiffusion(nn.Identity(), data_shape=(1,), T=50)
    seen = []

    class Spy(nn.Module):
        def forward(self, x, t, y=None):
            seen.append(y)
            return torch.zeros_like(x)

    d.model = Spy()
    x0, traj = ddim_sample(d, 3, 5, y=7, return_trajectory=True, clip_x0=False)
    assert traj["t"].tolist() == [50, 40, 30, 20, 10, 0] and traj["x_t"].shape == (6, 3, 1)
    assert torch.equal(traj["x_t"][-1], x0) and all(torch.equal(y, torch.full((3,), 7)) for y in seen)
    with pytest.raises(ValueError, match="needs the noise z"):
        ddim_step(torch.zeros(2), torch.zeros(2), torch.tensor(0.5), torch.tensor(0.9), eta=0.5)
    with pytest.raises(ValueError, match="not to the sampler as well"):
        ddim_sample(d, 3, 5, y=1, eps_fn=lambda x, t: x)


def test_step_with_eta_zero_follows_the_probability_flow_direction():
    """Independent of the DDIM formula: for data that are a single point x0, eps_theta is exact
    (eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)) and a DDIM step must land exactly on q's path:
    x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s) eps (the same eps)."""
    x0, eps = torch.tensor([0.3, -0.8]), torch.tensor([1.1, -0.4])
    ab_t, ab_s = torch.tensor(0.2), torch.tensor(0.7)
    x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps
    x_s, x0_pred = ddim_step(x_t, eps, ab_t, ab_s)
    torch.testing.assert_close(x0_pred, x0)
    torch.testing.assert_close(x_s, ab_s.sqrt() * x0 + math.sqrt(1 - 0.7) * eps)
