"""course_lib.diffusion.flow_matching and ode: the CFM loss, its minimiser, the model, the ODE solvers.

The exact marginal velocity of a Gaussian mixture is checked against binned simulation
(``checks_08.cfm_minimiser``) and against an independent formula through the score; the CFM loss
against a probe and autograd (``checks_08.cfm_loss_minimiser``). Every check also runs on copies with
a 1% error, which must fail. About 8 s on one core.
"""
import math

import pytest
import torch

from course_lib.diffusion import checks_08 as checks
from course_lib.diffusion.flow_matching import FlowMatching, build_flow_matching, cfm_loss, mixture_velocity
from course_lib.diffusion.ode import integrate
from course_lib.diffusion.score import mixture_score
from course_lib.nn import mean_flat
from course_lib.zoo import MODELS, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CENTRES = torch.tensor(checks.MIXTURE_1D["centres"], dtype=torch.float64)[:, None]
STDS = torch.tensor(checks.MIXTURE_1D["stds"], dtype=torch.float64)


def exact_velocity(x, t):
    return mixture_velocity(x, t, CENTRES, STDS)


def _velocity_mutant(scale=1.0, slope=1.0):
    """mixture_velocity written out again for the 1D mixture, with optional 1% errors in its parts."""
    def v(x, t):
        t = t[:, None]
        var = (1 - t) ** 2 + t ** 2 * STDS ** 2  # (N, K)
        diff = x - t * CENTRES[:, 0]
        r = torch.softmax(-0.5 * var.log() - diff ** 2 / (2 * var), dim=1)
        cond = CENTRES[:, 0] + slope * (t * STDS ** 2 - (1 - t)) / var * diff
        return scale * (r * cond).sum(1, keepdim=True)
    return v


def test_cfm_minimiser_is_the_marginal_velocity_by_binned_simulation():
    checks.cfm_minimiser(exact_velocity)
    x, t = torch.randn(50, 1, dtype=torch.float64), torch.rand(50, dtype=torch.float64)
    torch.testing.assert_close(_velocity_mutant()(x, t), exact_velocity(x, t))  # the copy is right when unmutated
    for mutant in [{"scale": 1.01}, {"slope": 1.01}]:  # the whole velocity, the conditional slope
        with pytest.raises(AssertionError):
            checks.cfm_minimiser(_velocity_mutant(**mutant))
    with pytest.raises(AssertionError):  # the diffusion lectures' time direction (t = 1 is noise)
        checks.cfm_minimiser(lambda x, t: exact_velocity(x, 1 - t))


def test_mixture_velocity_equals_the_tweedie_form_through_the_score():
    """v*(x, t) = (x + (1 - t) grad log p_t(x)) / t with p_t the law of t x1 + (1 - t) x0; and the end points."""
    g = torch.Generator().manual_seed(0)
    centres, std = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.tensor([0.2, 0.5, 1.0])
    weights = torch.tensor([0.2, 0.3, 0.5])
    x, t = 2 * torch.randn(40, 2, generator=g, dtype=torch.float64), torch.rand(40, generator=g, dtype=torch.float64)
    t = t * 0.98 + 0.01
    v = mixture_velocity(x, t, centres, std, weights=weights)
    score = mixture_score(x, centres, std, scale=t, noise_std=1 - t, weights=weights)
    torch.testing.assert_close(v, (x + (1 - t[:, None]) * score) / t[:, None])
    mean_x1 = (weights[:, None].double() * centres).sum(0)
    torch.testing.assert_close(mixture_velocity(x, 0.0, centres, std, weights=weights), mean_x1 - x)  # E[x1] - x0
    torch.testing.assert_close(mixture_velocity(x, 1.0, centres, std, weights=weights), x)  # x1 - E[x0]


def _cfm_mutant(target=1.0, data=1.0, time=1.0, reverse=False):
    def loss(velocity_fn, x1, *, t, x0):
        tt = t[:, None]
        x_t = tt * x0 + (1 - tt) * x1 if reverse else (1 - tt) * x0 + data * tt * x1
        return mean_flat((velocity_fn(x_t, time * t) - target * (x1 - x0)) ** 2)
    return loss


def test_cfm_loss_path_target_and_minimiser_and_one_percent_errors_fail():
    checks.cfm_loss_minimiser(cfm_loss, exact_velocity)
    for mutant in [dict(target=1.01), dict(data=1.01), dict(time=1.01), dict(reverse=True)]:
        with pytest.raises(AssertionError):
            checks.cfm_loss_minimiser(_cfm_mutant(**mutant), exact_velocity)
    with pytest.raises(AssertionError):  # a 1% error in the velocity is not a stationary point of the loss
        checks.cfm_loss_minimiser(cfm_loss, lambda x, t: 1.01 * exact_velocity(x, t))


class ExactNet(torch.nn.Module):
    """v* of N(m, s^2 I) through the network interface net(x_t, 1000 t, y)."""

    def __init__(self, m, s):
        super().__init__()
        self.m, self.s = torch.as_tensor(m), s
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # so the model has a device

    def forward(self, x, c, y=None):
        return mixture_velocity(x, c / 1000, self.m[None], self.s)


def test_sampling_with_the_exact_velocity_reaches_the_gaussian():
    m = torch.tensor([1.0, -2.0])
    model = FlowMatching(ExactNet(m, 0.0), data_shape=(2,))  # one point: every path is straight, one step lands
    x1, traj = model.sample(5, steps=1, return_trajectory=True)
    torch.testing.assert_close(x1, m.expand(5, 2))
    assert traj["nfe"] == 1 and traj["x"].shape == (2, 5, 2)
    model = FlowMatching(ExactNet(m, 0.3), data_shape=(2,))  # curved paths: Heun is second order
    x = model.sample(100_000, steps=50, method="heun", generator=torch.Generator().manual_seed(0))
    assert (x.mean(0) - m).abs().max() < 5 * 0.3 / math.sqrt(100_000)
    assert (x.std(0) / 0.3 - 1).abs().max() < 5 / math.sqrt(2 * 100_000)
    _, traj = model.sample(3, steps=10, method="heun", return_trajectory=True)
    assert traj["nfe"] == 20 and traj["t"].tolist() == pytest.approx([k / 10 for k in range(11)])


def test_flow_matching_learns_a_2d_gaussian():
    torch.manual_seed(0)
    model = build_flow_matching((2,), hidden=64)
    data = torch.randn(2048, 2) * 0.5 + torch.tensor([1.0, -1.0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model.loss(data[torch.randint(2048, (256,))])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = model.sample(2000, steps=20)
    assert (x.mean(0) - torch.tensor([1.0, -1.0])).abs().max() < 0.1
    assert (x.std(0) / 0.5 - 1).abs().max() < 0.15


def test_image_flow_matching_from_the_zoo_trains_with_fit_and_samples():
    from course_lib.train import fit

    assert MODELS["flow_matching"] == "course_lib.diffusion.flow_matching:build_flow_matching"
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    model = build_model("flow_matching", (1, 8, 8), 10, base_channels=8, channel_mults=(1, 2))
    result = fit(model, (x, torch.arange(16) % 10), steps=3, batch_size=8, device="cpu", progress=False)
    assert result.step == 3 and math.isfinite(result.history["loss"][-1])
    samples, traj = model.sample(4, y=3, steps=2, method="heun", return_trajectory=True)
    assert samples.shape == (4, 1, 8, 8) and traj["nfe"] == 4
    assert model.postprocess(samples).dtype == torch.uint8
    with pytest.raises(ValueError, match=r"expected float data of shape \[N, 1, 8, 8\]"):
        model.loss(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="no labels"):
        build_flow_matching((2,), 10)


def test_integrate_euler_is_first_order_heun_second_order_in_both_directions():
    x = torch.ones(1, dtype=torch.float64)
    for method, order in [("euler", 1), ("heun", 2)]:
        errors = []
        for steps in (20, 40):
            out = integrate(lambda x_, t: x_, x, torch.linspace(0, 1, steps + 1, dtype=torch.float64), method=method)
            assert out.nfe == steps * order and out.trajectory is None
            errors.append(abs(out.x.item() - math.e))
        assert errors[0] / errors[1] == pytest.approx(2 ** order, rel=0.1)
    back = integrate(lambda x_, t: x_, torch.full((1,), math.e, dtype=torch.float64), torch.linspace(1, 0, 201),
                     method="heun", return_trajectory=True)
    assert abs(back.x.item() - 1) < 1e-4 and back.trajectory.shape == (201, 1)
    with pytest.raises(ValueError, match="strictly increasing"):
        integrate(lambda x_, t: x_, x, [0.0, 0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match="unknown method"):
        integrate(lambda x_, t: x_, x, [0.0, 1.0], method="rk45")


def test_the_benchmark_suite_is_registered():
    import importlib

    from benchmarks.run import SUITES

    module, _, function = SUITES["flow_matching"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
