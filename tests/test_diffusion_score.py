"""course_lib.diffusion.score: score <-> eps, DSM, Langevin, the VP-SDE and its two samplers.

Each identity is checked against an independent computation (autograd of a torch.distributions log
density, Bayes' rule on a grid, the SDE's moment equations, the exact marginal of Gaussian data),
through the functions of ``checks_08``; every check also runs on a copy of the formula with a 1%
error and must fail. About 15 s on one core.
"""
import math

import pytest
import torch

from course_lib.diffusion import checks_08 as checks
from course_lib.diffusion import score as S
from course_lib.diffusion.schedules import alpha_bars_from_betas, linear_beta_schedule
from course_lib.diffusion.toy import MLPDenoiser, mixture_eps_star
from course_lib.nn import mean_flat

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SDE = S.VPSDE()


# ------------------------------------------------------------------------------ score <-> eps
def test_score_from_eps_is_tweedie_and_a_one_percent_error_fails():
    checks.score_eps_relation(S.score_from_eps)
    with pytest.raises(AssertionError):
        checks.score_eps_relation(lambda eps, ab: 1.01 * S.score_from_eps(eps, ab))
    with pytest.raises(AssertionError):  # sqrt(1 - 1.01 alpha_bar)
        checks.score_eps_relation(lambda eps, ab: S.score_from_eps(eps, 1.01 * ab))
    eps, ab = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0.9, 0.5, 0.1, 0.01], dtype=torch.float64)
    torch.testing.assert_close(S.eps_from_score(S.score_from_eps(eps, ab), ab), eps)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_mixture_score_matches_autograd_of_the_mixture_density(dim):
    g = torch.Generator().manual_seed(dim)
    k, n = 4, 50
    centres = torch.randn(k, dim, generator=g, dtype=torch.float64)
    std = torch.tensor([0.1, 0.3, 0.5, 1.0], dtype=torch.float64)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    scale, noise = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    x = 2 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    ours = S.mixture_score(x, centres, std, scale=scale, noise_std=noise, weights=weights)
    comp_std = (scale[:, None] ** 2 * std ** 2 + noise[:, None] ** 2).sqrt()[:, :, None].expand(n, k, dim)
    law = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(weights.double().expand(n, k)),
        torch.distributions.Independent(torch.distributions.Normal(scale[:, None, None] * centres, comp_std), 1))
    x.requires_grad_(True)
    (reference,) = torch.autograd.grad(law.log_prob(x).sum(), x)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_mixture_score_times_minus_sqrt_one_minus_alpha_bar_is_notebook_06s_eps_star():
    alpha_bars = alpha_bars_from_betas(linear_beta_schedule(1000))
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, -2.0]], dtype=torch.float64)
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.tensor([1, 2, 10, 100, 500, 1000])
    score = S.mixture_score(x, centres, 0.2, scale=alpha_bars[t].sqrt(), noise_std=(1 - alpha_bars[t]).sqrt())
    torch.testing.assert_close(S.eps_from_score(score, alpha_bars[t]), mixture_eps_star(alpha_bars, centres, 0.2)(x, t))


def test_mixture_score_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"centres must have shape \[K, 2\]"):
        S.mixture_score(torch.zeros(3, 2), torch.zeros(4, 3), 0.1)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        S.mixture_score(torch.zeros(3, 1, 2, 2), torch.zeros(4, 4), 0.1)


# ----------------------------------------------------------------------------------- DSM
def _dsm_mutant(noise=1.0, target=1.0, coef=1.0, weight=1.0):
    def loss(score_fn, x, sigmas, *, idx, z):
        sigma = torch.as_tensor(sigmas, dtype=x.dtype)[idx]
        s = sigma.view(-1, *[1] * (x.dim() - 1))
        return 0.5 * weight * mean_flat((coef * s * score_fn(x + noise * s * z, sigma) + target * z) ** 2)
    return loss


def test_dsm_loss_minimiser_is_the_noised_score_and_one_percent_errors_fail():
    out = checks.dsm_minimiser(S.dsm_loss)
    assert out["weight_error"] == 0 and out["input_error"] == 0
    for mutant in [dict(noise=1.01), dict(target=1.01), dict(coef=1.01), dict(weight=1.01)]:
        with pytest.raises(AssertionError):
            checks.dsm_minimiser(_dsm_mutant(**mutant))


def test_dsm_loss_works_on_images_and_draws_its_own_noise():
    x = torch.randn(8, 1, 4, 4)
    per = S.dsm_loss(lambda x_, s: torch.zeros_like(x_), x, S.geometric_sigmas(1.0, 0.01, 5))
    assert per.shape == (8,) and (per > 0).all()
    with pytest.raises(ValueError, match="positive noise levels"):
        S.dsm_loss(lambda x_, s: x_, x, torch.tensor([1.0, -0.1]))


def test_geometric_sigmas():
    sigmas = S.geometric_sigmas(1.0, 0.01, 10)
    assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] == pytest.approx(0.01)
    torch.testing.assert_close(sigmas[1:] / sigmas[:-1], torch.full((9,), 0.01 ** (1 / 9), dtype=torch.float64))


def test_annealed_langevin_with_the_exact_score_reaches_the_mixture():
    """Langevin dynamics is exact only as the step size -> 0 (and mixing between modes takes time): a
    sanity check of the moments within 5%, not a 1% check."""
    c, s = torch.tensor(checks.MIXTURE_1D["centres"]), torch.tensor(checks.MIXTURE_1D["stds"])
    sigmas = S.geometric_sigmas(3.0, 0.01, 10)
    g = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(10_000, 1, generator=g)
    x, traj = S.annealed_langevin(lambda x_, sig: S.mixture_score(x_, c[:, None], s, noise_std=sig), x, sigmas,
                                  steps_per_sigma=50, step_size=4e-5, generator=g, return_trajectory=True)
    mean, var = c.mean(), (s ** 2 + c ** 2).mean() - c.mean() ** 2
    assert abs(x.mean() - mean) < 0.05 and abs(x.var() / var - 1) < 0.05
    assert traj["nfe"] == 501 and traj["x"].shape == (len(traj["sigma"]), 10_000, 1) == (52, 10_000, 1)
    with pytest.raises(ValueError, match="decreasing"):
        S.annealed_langevin(lambda x_, sig: x_, x, sigmas.flip(0))


def test_score_model_trains_and_samples_on_2d_points():
    torch.manual_seed(0)
    model = S.ScoreModel(MLPDenoiser(dim=2, hidden=64), S.geometric_sigmas(2.0, 0.05, 8), data_shape=(2,))
    x = torch.randn(512, 2) * 0.5 + 1.0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = model.loss(x[torch.randint(512, (128,))])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.8 * sum(losses[:5]) / 5
    samples = model.sample(64, steps_per_sigma=5, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (64, 2) and torch.isfinite(samples).all()
    with pytest.raises(ValueError, match="decreasing"):
        S.ScoreModel(MLPDenoiser(), torch.tensor([0.1, 1.0]), data_shape=(2,))


# ---------------------------------------------------------------------------------- VP-SDE
def test_vp_marginal_solves_the_moment_equations_and_one_percent_errors_fail():
    checks.vp_marginal(SDE.marginal, SDE.beta)

    class LogAlphaBar(S.VPSDE):
        def log_alpha_bar(self, t):
            return 1.01 * super().log_alpha_bar(t)

    with pytest.raises(AssertionError):
        checks.vp_marginal(LogAlphaBar().marginal, SDE.beta)
    with pytest.raises(AssertionError):
        checks.vp_marginal(lambda t: (SDE.marginal(t)[0], 1.01 * SDE.marginal(t)[1]), SDE.beta)


def test_ddpm_linear_schedule_is_the_vp_sde_discretised():
    """beta(t) = T beta_{tT}: DDPM's alpha_bar_t and the SDE's alpha_bar(t / T) agree to 0.3% in sqrt."""
    alpha_bars = alpha_bars_from_betas(linear_beta_schedule(1000))
    t = torch.arange(1001, dtype=torch.float64)
    mean_coef, std = SDE.marginal(t / 1000)
    assert (alpha_bars.sqrt() - mean_coef).abs().max() < 3e-3
    assert ((1 - alpha_bars).sqrt() - std).abs().max() < 3e-3


def test_sde_and_ode_samplers_reach_the_exact_marginal_and_one_percent_errors_fail():
    samplers = {"reverse SDE (Euler-Maruyama, 1000 steps)": lambda x, f: S.reverse_sde_sample(SDE, x, f, steps=1000),
                "probability flow (Heun, 100 steps)": lambda x, f: S.probability_flow_sample(SDE, x, f, steps=100)}
    checks.sde_ode_marginals(samplers, SDE.marginal)

    mutants = {
        "reverse SDE, g^2 score term +1%": lambda x, f: S.reverse_sde_sample(SDE, x, lambda x_, t: 1.01 * f(x_, t)),
        "probability flow, 1/2 g^2 -> 0.505 g^2": lambda x, f: S.probability_flow_sample(
            SDE, x, lambda x_, t: 1.01 * f(x_, t)),
    }
    for name, mutant in mutants.items():
        with pytest.raises(AssertionError):
            checks.sde_ode_marginals({name: mutant}, SDE.marginal)


def test_samplers_take_an_eps_network_count_evaluations_and_keep_trajectories():
    m, s = 0.5, 0.2

    def score_fn(x, t):
        a, sd = SDE.marginal(t)
        return -(x - a[:, None] * m) / (a[:, None] ** 2 * s ** 2 + sd[:, None] ** 2)

    calls = []

    def eps_model(x, t_net, y=None):  # a DDPM noise network: time T t, eps = -sqrt(1 - alpha_bar) score
        calls.append(t_net)
        return S.eps_from_score(score_fn(x, t_net / 1000), torch.exp(SDE.log_alpha_bar(t_net / 1000)))

    x1 = torch.randn(100, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = S.reverse_sde_sample(SDE, x1, score_fn, steps=20, generator=torch.Generator().manual_seed(1))
    b, traj = S.reverse_sde_sample(SDE, x1, eps_model=eps_model, steps=20, generator=torch.Generator().manual_seed(1),
                                   return_trajectory=True)
    torch.testing.assert_close(a, b)
    assert traj["nfe"] == len(calls) == 20 and traj["x"].shape == (21, 100, 1)
    assert traj["t"][0] == 1 and traj["t"][-1] == pytest.approx(1e-3) and calls[0].max() == pytest.approx(1000.0)
    calls.clear()
    a = S.probability_flow_sample(SDE, x1, score_fn, steps=10)
    b, traj = S.probability_flow_sample(SDE, x1, eps_model=eps_model, steps=10, return_trajectory=True)
    torch.testing.assert_close(a, b)
    assert traj["nfe"] == len(calls) == 20 and traj["x"].shape == (11, 100, 1)  # Heun: 2 evaluations per step
    _, traj = S.probability_flow_sample(SDE, x1, score_fn, steps=10, method="euler", return_trajectory=True)
    assert traj["nfe"] == 10
    with pytest.raises(ValueError, match="exactly one of score_fn"):
        S.reverse_sde_sample(SDE, x1, score_fn, eps_model=eps_model)
    with pytest.raises(ValueError, match="unknown method"):
        S.probability_flow_sample(SDE, x1, score_fn, method="rk4")
    assert math.isclose(SDE.beta(torch.tensor(1.0)).item(), 20.0)


def test_energy_distance_is_twice_the_squared_cdf_distance_in_1d():
    """In 1D, 2 E|X - Y| - E|X - X'| - E|Y - Y'| = 2 int (F - G)^2 dx (Szekely), exactly for empirical laws."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 1, generator=g, dtype=torch.float64), 0.3 + torch.randn(200, 1, generator=g,
                                                                                    dtype=torch.float64)
    points = torch.cat([a, b])[:, 0].sort().values
    f = (a[:, 0][None] <= points[:, None]).double().mean(1)  # empirical CDFs at the sorted points
    gcdf = (b[:, 0][None] <= points[:, None]).double().mean(1)
    integral = ((f - gcdf)[:-1] ** 2 * (points[1:] - points[:-1])).sum().item()  # piecewise constant between points
    assert checks.energy_distance(a, b) == pytest.approx(2 * integral, rel=1e-9)
    assert checks.energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
