"""GaussianDiffusion: forward process, posterior, reverse step, losses, each against an independent computation."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.diffusion import GaussianDiffusion
from course_lib.diffusion.schedules import linear_beta_schedule
from course_lib.distributions import gaussian_kl


class FixedEps(nn.Module):
    """A stand-in eps_theta that returns a preset prediction and records the t it was called with."""

    def __init__(self, eps_pred=None):
        super().__init__()
        self.eps_pred, self.calls = eps_pred, []

    def forward(self, x_t, t, y=None):
        self.calls.append(t.clone())
        return torch.zeros_like(x_t) if self.eps_pred is None else self.eps_pred


def make(T=1000, variance="beta", model=None, shape=(1,)):
    return GaussianDiffusion(model or FixedEps(), linear_beta_schedule(T), data_shape=shape, variance=variance)


def test_q_sample_matches_iterating_the_one_step_kernel():
    # iterate x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z_t, t times, on many samples
    diffusion = make()
    betas = linear_beta_schedule(1000)
    x0_values = torch.tensor([-0.8, 0.1, 1.0])
    n = 10_000  # 30,000 values: below torch's parallel grain size, so one thread (fast on a busy CPU)
    g = torch.Generator().manual_seed(0)
    x = x0_values.repeat_interleave(n)
    for t in range(1, 1001):
        x = math.sqrt(1 - betas[t]) * x + math.sqrt(betas[t]) * torch.randn(x.shape, generator=g)
        if t in (10, 200, 1000):
            closed = diffusion.q_sample(x0_values[:, None], t, eps=torch.zeros(3, 1))[:, 0]  # the mean
            std = diffusion.q_sample(torch.zeros(1, 1), t, eps=torch.ones(1, 1)).item()  # sqrt(1 - alpha_bar_t)
            emp = x.double().reshape(3, n)
            se_mean = std / math.sqrt(n)
            assert torch.all((emp.mean(1) - closed).abs() < 5 * se_mean), t
            assert torch.all((emp.std(1) - std).abs() < 5 * std / math.sqrt(2 * n)), t
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05  # x_T ~ N(0, I)


def test_q_sample_draws_eps_itself():
    diffusion = make()
    torch.manual_seed(0)
    x_t = diffusion.q_sample(torch.full((50_000, 1), 0.5), 300)
    ab = diffusion.alpha_bars[300].item()
    assert abs(x_t.mean().item() - math.sqrt(ab) * 0.5) < 0.02
    assert abs(x_t.var().item() - (1 - ab)) < 0.02


def test_predict_x0_inverts_q_sample():
    diffusion = make(shape=(1, 4, 4))
    x0, eps = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    t = torch.tensor([1, 2, 50, 500, 999, 1000])
    torch.testing.assert_close(diffusion.predict_x0(diffusion.q_sample(x0, t, eps), t, eps), x0, rtol=1e-4, atol=2e-4)


def _conditional_from_joint(t, x0, x_t, betas):
    """q(x_{t-1} | x_t, x_0) by Gaussian conditioning of the joint of (x_{t-1}, x_t) given x_0 (float64)."""
    alpha_bars = np.cumprod(1 - betas)
    m_prev, v_prev = math.sqrt(alpha_bars[t - 1]) * x0, 1 - alpha_bars[t - 1]  # q(x_{t-1} | x_0)
    a = 1 - betas[t]  # x_t = sqrt(a) x_{t-1} + sqrt(beta_t) z
    cov = np.array([[v_prev, math.sqrt(a) * v_prev], [math.sqrt(a) * v_prev, a * v_prev + betas[t]]])
    mean = m_prev + cov[0, 1] / cov[1, 1] * (x_t - math.sqrt(a) * m_prev)
    return mean, cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]


@pytest.mark.parametrize("t", [2, 3, 10, 100, 500, 1000])
def test_posterior_matches_gaussian_conditioning(t):
    diffusion = make()
    betas = linear_beta_schedule(1000).numpy()
    x0, x_t = torch.tensor([[0.7], [-0.3]]), torch.tensor([[0.2], [1.5]])
    mean, var, log_var = diffusion.q_posterior(x0, x_t, t)
    for i in range(2):
        ref_mean, ref_var = _conditional_from_joint(t, x0[i, 0].item(), x_t[i, 0].item(), betas)
        assert math.isclose(mean[i, 0].item(), ref_mean, rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(var[i, 0].item(), ref_var, rel_tol=1e-5)
        assert math.isclose(log_var[i, 0].item(), math.log(ref_var), abs_tol=1e-5)


@pytest.mark.parametrize("t", [2, 50])
def test_posterior_matches_brute_force_bayes_on_a_grid(t):
    # q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), normalised numerically on a fine grid
    diffusion = make()
    betas = linear_beta_schedule(1000).numpy()
    alpha_bars = np.cumprod(1 - betas)
    x0, x_t = 0.6, 0.45
    grid = np.linspace(-3, 3, 600_001)
    log_prior = -0.5 * (grid - math.sqrt(alpha_bars[t - 1]) * x0) ** 2 / (1 - alpha_bars[t - 1])
    log_lik = -0.5 * (x_t - math.sqrt(1 - betas[t]) * grid) ** 2 / betas[t]
    w = np.exp(log_prior + log_lik - (log_prior + log_lik).max())
    w /= w.sum()
    grid_mean = (w * grid).sum()
    grid_var = (w * (grid - grid_mean) ** 2).sum()
    mean, var, _ = diffusion.q_posterior(torch.tensor([[x0]]), torch.tensor([[x_t]]), t)
    assert math.isclose(mean.item(), grid_mean, abs_tol=1e-5)
    assert math.isclose(var.item(), grid_var, rel_tol=1e-3)


def test_posterior_log_variance_is_clipped_at_t1():
    diffusion = make()
    assert diffusion.posterior_variance[1] == 0
    torch.testing.assert_close(diffusion.posterior_log_variance_clipped[1], diffusion.posterior_variance[2].log())


def test_loss_is_l_simple_with_given_t_and_eps():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1)
    model = lambda x_t, t, y=None: net(x_t) * (1 + t[:, None, None, None] / 1000)  # noqa: E731 (depends on t)
    diffusion = GaussianDiffusion(model, linear_beta_schedule(1000), data_shape=(1, 5, 5))
    x0, eps, t = torch.rand(4, 1, 5, 5) * 2 - 1, torch.randn(4, 1, 5, 5), torch.tensor([1, 10, 500, 1000])
    ab = torch.cumprod(1 - linear_beta_schedule(1000), 0)[t].float()[:, None, None, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # Algorithm 1, line 5, by hand
    expected = ((eps - model(x_t, t)) ** 2).mean()
    out = diffusion.loss(x0, t=t, eps=eps)
    torch.testing.assert_close(out["loss"], expected)
    assert out["mse"].item() == out["loss"].item() and not out["mse"].requires_grad
    out["loss"].backward()  # the loss trains the network
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_loss_draws_t_uniformly_from_1_to_T():
    model = FixedEps()
    diffusion = make(T=5, model=model)
    torch.manual_seed(0)
    for _ in range(20):
        diffusion.loss(torch.zeros(100, 1))
    counts = torch.bincount(torch.cat(model.calls), minlength=7)
    assert counts[0] == 0 and counts[6] == 0  # never t = 0 or t > T
    assert torch.all((counts[1:6] - 400).abs() < 80)  # about 2000 / 5 each


def test_loss_rejects_uint8_and_wrong_shape():
    diffusion = make(shape=(1, 4, 4))
    with pytest.raises(TypeError, match="to_signed"):
        diffusion.loss(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[N, 1, 4, 4\]"):
        diffusion.loss(torch.zeros(2, 1, 5, 5))


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_eps_loss_weight_gives_the_kl_term(variance):
    # L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) = weight_t ||eps - eps_pred||^2 + const(t)
    torch.manual_seed(0)
    T = 1000
    betas = linear_beta_schedule(T)
    alphas, alpha_bars = 1 - betas, torch.cumprod(1 - betas, 0)
    x0, eps = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    for t in (2, 20, 400, 1000):
        x_t = alpha_bars[t].sqrt() * x0 + (1 - alpha_bars[t]).sqrt() * eps
        post_mean = (alpha_bars[t - 1].sqrt() * betas[t] * x0
                     + alphas[t].sqrt() * (1 - alpha_bars[t - 1]) * x_t) / (1 - alpha_bars[t])
        post_var = (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t]) * betas[t]
        sigma2 = betas[t] if variance == "beta" else post_var

        def kl(eps_pred):  # mu_theta from eps_pred (Algorithm 2), then the closed-form KL, summed
            mu = (x_t - betas[t] / (1 - alpha_bars[t]).sqrt() * eps_pred) / alphas[t].sqrt()
            return gaussian_kl(post_mean, post_var.log(), mu, sigma2.log()).sum(1)

        eps_pred = eps + 0.3 * torch.randn(3, 8, dtype=torch.float64)
        weight = make(T, variance).eps_loss_weight(t).double()
        expected = kl(eps_pred) - kl(eps)  # the constant is the KL at a perfect prediction
        torch.testing.assert_close(weight * ((eps - eps_pred) ** 2).sum(1), expected, rtol=1e-4, atol=1e-7)
        if variance == "beta_tilde":
            assert torch.allclose(kl(eps), torch.zeros(3, dtype=torch.float64))  # no constant then
    assert make(T).eps_loss_weight(torch.tensor([2, 3])).shape == (2,)


def test_p_mean_variance_is_algorithm_2_without_clipping():
    torch.manual_seed(0)
    eps_pred = torch.randn(4, 1, 3, 3)
    diffusion = make(model=FixedEps(eps_pred), shape=(1, 3, 3))
    x_t, t = torch.randn(4, 1, 3, 3), torch.tensor([1, 2, 300, 1000])
    out = diffusion.p_mean_variance(x_t, t, clip_x0=False)
    b, a, ab = diffusion.betas[t], diffusion.alphas[t], diffusion.alpha_bars[t]
    expected = (x_t - (b / (1 - ab).sqrt())[:, None, None, None] * eps_pred) / a.sqrt()[:, None, None, None]
    torch.testing.assert_close(out["mean"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["variance"].flatten(), b)  # sigma_t^2 = beta_t
    clipped = diffusion.p_mean_variance(x_t * 50, t, clip_x0=True)["x0_pred"]
    assert clipped.abs().max() <= 1.0


def test_p_sample_adds_no_noise_at_t1_and_noise_otherwise():
    diffusion = make(shape=(2, 4, 4))
    x_t = torch.randn(3, 2, 4, 4)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    mean = diffusion.p_mean_variance(x_t, 1)["mean"]
    torch.testing.assert_close(diffusion.p_sample(x_t, 1, generator=g1), mean)
    torch.testing.assert_close(diffusion.p_sample(x_t, 1, generator=g2), mean)
    a, b = diffusion.p_sample(x_t, 2, generator=g1), diffusion.p_sample(x_t, 2, generator=g2)
    assert not torch.allclose(a, b)
    # mixed batch: only the rows with t > 1 are noised
    t = torch.tensor([1, 5, 1])
    out = diffusion.p_sample(x_t, t, generator=torch.Generator().manual_seed(3))
    mean = diffusion.p_mean_variance(x_t, t)["mean"]
    torch.testing.assert_close(out[[0, 2]], mean[[0, 2]])
    assert not torch.allclose(out[1], mean[1])


def test_sampling_loop_runs_all_steps_and_returns_the_chain():
    model = FixedEps()
    diffusion = GaussianDiffusion(model, data_shape=(1, 8, 8), schedule="cosine", T=12)
    x0 = diffusion.sample(5, progress=False, generator=torch.Generator().manual_seed(0))
    assert x0.shape == (5, 1, 8, 8) and x0.abs().max() <= 1.0
    assert [int(t[0]) for t in model.calls] == list(range(12, 0, -1))  # for t = T, ..., 1
    x0, chain = diffusion.sample(5, chain_every=4, progress=False, generator=torch.Generator().manual_seed(0))
    assert chain["t"].tolist() == [12, 8, 4, 0]
    assert chain["x_t"].shape == (4, 5, 1, 8, 8) and chain["x0_pred"].shape == (4, 5, 1, 8, 8)
    torch.testing.assert_close(chain["x_t"][-1], x0)
    torch.testing.assert_close(x0, diffusion.sample(5, progress=False, generator=torch.Generator().manual_seed(0)))


def test_buffers_follow_the_module():
    diffusion = make(T=10)
    names = {name for name, _ in diffusion.named_buffers()}
    assert {"betas", "alphas", "alpha_bars", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars", "posterior_variance",
            "posterior_log_variance_clipped", "posterior_mean_coef_x0", "posterior_mean_coef_xt"} <= names
    moved = diffusion.to("meta")
    assert all(buffer.device.type == "meta" for buffer in moved.buffers())
    assert make(T=10).double().alpha_bars.dtype == torch.float64
    # constants of the schedule: rebuilt from (schedule, T), not saved, never copied by the EMA
    assert not any(name in make(T=10).state_dict() for name in names)
