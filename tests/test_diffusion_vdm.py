"""course_lib.diffusion.vdm: schedules, the continuous-time loss and its end-point invariance, the bound.

The invariance is checked against a schedule-free integral over the SNR (``checks_08.vdm_endpoint_invariance``)
and must fail for 1% errors in the integrand; the prior and decoder terms against torch.distributions;
the whole bound against the entropy of random bits with the exact denoiser. About 6 s on one core.
"""
import math
from functools import partial

import pytest
import torch

from course_lib.diffusion import checks_08 as checks
from course_lib.diffusion import vdm as V

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GMIN, GMAX = -13.3, 5.0


class CosineGamma(torch.nn.Module):
    """gamma_min + (gamma_max - gamma_min) (1 - cos(pi t)) / 2: same end points, flat at both ends."""
    gamma_min, gamma_max = GMIN, GMAX

    def forward(self, t):
        return GMIN + (GMAX - GMIN) * (1 - torch.cos(math.pi * t)) / 2


def bent_monotone_gamma(seed=0):
    torch.manual_seed(seed)
    gamma = V.MonotoneGamma(GMIN, GMAX, hidden=64).double()
    with torch.no_grad():  # far from linear: the network's second term dominates
        gamma.w3.fill_(1.0)
        gamma.w2.mul_(4.0)
    return gamma


def schedules():
    return {"linear": V.LinearGamma(GMIN, GMAX), "cosine": CosineGamma(), "learned (monotone net)": bent_monotone_gamma()}


def eps_denoiser(z, g):  # the same optimal denoiser, written as an eps prediction
    alpha, sigma = V.alpha_sigma(g[:, None])
    return (z - alpha * checks.binary_denoiser(z, g)) / sigma


def _mutant_quadrature(weight=1.0, exponent=1.0, nodes=128):
    """diffusion_loss_quadrature's x-form written again, with a 1% error in the weight or in exp(-gamma)."""
    def loss(x, gamma, denoise, eps):
        import numpy as np
        u, w = np.polynomial.legendre.leggauss(nodes)
        total = 0
        for t_j, w_j in zip((u + 1) / 2, w / 2):
            g, dg = V.gamma_and_derivative(gamma, torch.full((x.shape[0],), float(t_j), dtype=x.dtype))
            alpha, sigma = V.alpha_sigma(g[:, None])
            x_hat = denoise(alpha * x + sigma * eps, g)
            total = total + float(w_j) * 0.5 * weight * dg * torch.exp(-exponent * g) * ((x - x_hat) ** 2).sum(1)
        return total
    return loss


def test_continuous_loss_depends_on_the_schedule_only_through_its_end_points():
    out = checks.vdm_endpoint_invariance(V.diffusion_loss_quadrature, schedules(), GMIN, GMAX)
    checks.vdm_endpoint_invariance(partial(V.diffusion_loss_quadrature, prediction="x"), schedules(), GMIN, GMAX)
    checks.vdm_endpoint_invariance(lambda x, gamma, d, eps: V.diffusion_loss_quadrature(
        x, gamma, eps_denoiser, eps, prediction="eps"), schedules(), GMIN, GMAX)
    checks.vdm_endpoint_invariance(_mutant_quadrature(), schedules(), GMIN, GMAX)  # the copy, unmutated, passes
    for mutant in [dict(weight=1.01), dict(exponent=1.01)]:
        with pytest.raises(AssertionError):
            checks.vdm_endpoint_invariance(_mutant_quadrature(**mutant), schedules(), GMIN, GMAX)
    other_ends = {"linear to 6.0": V.LinearGamma(GMIN, 6.0)}  # another end point: another loss
    with pytest.raises(AssertionError):
        checks.vdm_endpoint_invariance(V.diffusion_loss_quadrature, other_ends, GMIN, GMAX)
    assert out["reference"].mean() > 0


def test_one_draw_estimate_is_unbiased_for_the_quadrature():
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 2, (1, 16), generator=g) * 2 - 1).double()
    eps = torch.randn(1, 16, generator=g, dtype=torch.float64)
    for name, gamma in schedules().items():
        exact = V.diffusion_loss_quadrature(x, gamma, checks.binary_denoiser, eps, nodes=256).item()
        k = 20_000
        t = torch.rand(k, generator=g, dtype=torch.float64)
        draws = V.diffusion_loss(x.expand(k, 16), gamma, checks.binary_denoiser, t=t, eps=eps.expand(k, 16),
                                 prediction="x")
        z = (draws.mean().item() - exact) / (draws.std().item() / math.sqrt(k))
        assert abs(z) < 4, (name, z)


def test_schedules_have_their_end_points_and_the_autograd_derivative():
    for gamma in schedules().values():
        t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(gamma(t).double(), torch.tensor([GMIN, GMAX], dtype=torch.float64))
        t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
        with torch.no_grad():  # evaluation: gamma' by autograd all the same, returned without a graph
            _, dg = V.gamma_and_derivative(gamma, t)
        h = 1e-6
        torch.testing.assert_close(dg, (gamma(t + h) - gamma(t - h)).detach() / (2 * h), rtol=1e-5, atol=1e-5)
        assert (dg > 0).all() and not dg.requires_grad
    learned = V.MonotoneGamma(GMIN, GMAX).double()
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert (learned(t) - V.LinearGamma(GMIN, GMAX)(t)).abs().max() < 0.5  # starts near linear
    _, dg = V.gamma_and_derivative(learned, t)
    assert dg.requires_grad  # in training, gamma' carries gradients to the schedule
    with pytest.raises(ValueError, match="gamma_min < gamma_max"):
        V.LinearGamma(1.0, -1.0)


def test_prior_and_decoder_terms_against_torch_distributions():
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)[torch.randint(0, 256, (3, 10))]
    for g1 in (2.0, 5.0):
        alpha, sigma = V.alpha_sigma(torch.tensor(g1, dtype=torch.float64))
        reference = torch.distributions.kl_divergence(torch.distributions.Normal(alpha * x, sigma),
                                                      torch.distributions.Normal(0.0, 1.0)).sum(1)
        torch.testing.assert_close(V.prior_kl(x, torch.tensor(g1)), reference)
    values = torch.linspace(-1, 1, 256, dtype=torch.float64)
    index = ((x + 1) * 127.5).round().long()
    for g0 in (-13.3, -7.0, 0.0):  # a step of 2/255 is 6, 0.26 and 0.008 standard deviations
        g0 = torch.tensor(g0, dtype=torch.float64)
        eps = 5 * torch.randn_like(x)  # far out too: the value x itself may lie outside the summed window
        nll = V.reconstruction_nll(x, g0, eps)
        alpha, sigma = V.alpha_sigma(g0)
        log_w = torch.distributions.Normal((alpha * x + sigma * eps)[..., None] / alpha, sigma / alpha).log_prob(values)
        log_p = log_w - log_w.logsumexp(-1, keepdim=True)  # normalised over all 256 values
        torch.testing.assert_close(nll, -log_p.gather(-1, index[..., None])[..., 0].sum(1))
    with pytest.raises(ValueError, match="256-level data"):
        V.reconstruction_nll(x + 0.001, g0)


class Oracle(torch.nn.Module):
    """The exact eps_hat for +-1 pixels, through the network interface eps_model(z, c, y)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, c, y=None):
        return eps_denoiser(z, GMIN + c / 1000 * (GMAX - GMIN))


def test_the_bound_on_random_bits_is_one_bit_per_dim_with_the_exact_denoiser():
    model = V.VDM(Oracle(), (16,)).double()
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 2, (4000, 16), generator=g) * 2 - 1).double()
    terms = model.terms(x[:500])  # the one-draw estimate the training loss uses
    bits = 16 * math.log(2)
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    diffusion = V.diffusion_loss_quadrature(x, model.gamma, lambda z, gm: model.eps_hat(z, gm), eps, prediction="eps")
    total = (diffusion + terms["prior"][0] + V.reconstruction_nll(x, GMIN)) / bits  # bits/dim
    se = total.std().item() / math.sqrt(len(total))
    assert abs(total.mean().item() - 1.0) < 3 * se + 0.005  # H = 1 bit per pixel; the bound's gap is small here
    assert set(terms) == {"diffusion", "prior", "recon", "total"} and terms["total"].shape == (500,)
    assert terms["prior"].mean() / bits < 0.006 and terms["recon"].mean() / bits < 0.01
    loss = model.loss(x[:8])
    assert set(loss) == {"loss", "diffusion", "prior", "recon"}
    samples = model.float().sample(100, steps=100, generator=torch.Generator().manual_seed(2))
    assert samples.shape == (100, 16) and (samples.abs() > 0.99).float().mean() > 0.99
    assert abs((samples > 0).float().mean().item() - 0.5) < 0.05


def test_fourier_features():
    features = V.FourierFeatures(7, 8)
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    out = features(x)
    assert out.shape == (2, 3 * 5, 4, 4) == (2, features.channels(3), 4, 4)
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[:, 3:6], torch.sin(128 * math.pi * x))  # sin(2^7 pi x) of each channel
    torch.testing.assert_close(out[:, 6:9], torch.sin(256 * math.pi * x))
    torch.testing.assert_close(out[:, 9:12], torch.cos(128 * math.pi * x))
    assert V.FourierFeatures(7, 8)(torch.zeros(5, 2)).shape == (5, 10)  # vectors too


def test_vdm_from_the_zoo_with_learned_schedule_and_fourier_features_trains_with_fit():
    from course_lib.train import fit
    from course_lib.zoo import MODELS, build_model

    assert MODELS["vdm"] == "course_lib.diffusion.vdm:build_vdm"
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    model = build_model("vdm", (1, 8, 8), None, learned_schedule=True, fourier=True, base_channels=8,
                        channel_mults=(1, 2))
    assert set(model.configure_optimizers(1e-3)) == {"model", "schedule"}
    before = model.gamma.w3.detach().clone()
    result = fit(model, x, steps=3, batch_size=8, lr=1e-2, device="cpu", progress=False)
    assert result.step == 3 and math.isfinite(result.history["loss"][-1])
    assert "schedule_grad_norm" in result.history and not torch.equal(model.gamma.w3, before)
    torch.testing.assert_close(model.gamma(torch.tensor([0.0, 1.0])), torch.tensor([GMIN, GMAX]))
    bpd = model.nll_bits_per_dim(model.preprocess(x[:4]))
    assert bpd.shape == (4,) and (bpd > 0).all()
    samples = model.sample(2, steps=3)
    assert samples.shape == (2, 1, 8, 8) and model.postprocess(samples).dtype == torch.uint8
    plain = build_model("vdm", (1, 8, 8), None, base_channels=8, channel_mults=(1, 2))
    assert isinstance(plain.configure_optimizers(1e-3), torch.optim.Adam)
