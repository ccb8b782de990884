"""The VAE's formulas against independent computations (notebook 03; Kingma & Welling 2014, Burda et al. 2016).

The linear-Gaussian model p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I) has everything in closed form:
p(x) = N(b, W W^T + s^2 I) and the posterior p(z | x) = N(m, S), S = (I + W^T W / s^2)^-1,
m = S W^T (x - b) / s^2. The exact values come from ``torch.distributions`` (full covariances), the
estimates from the library's ``VAE`` with linear networks plugged in.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from course_lib.vae import (
    VAE,
    iwae_bound,
    iwae_from_log_weights,
    kl_to_standard_normal,
    negative_elbo,
    reparameterize,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DT = torch.float64


class ConstantEncoder(nn.Module):
    """q(z | x) = N(mu, diag(exp(log_var))) with the same (trainable) parameters for every x."""

    def __init__(self, mu, log_var):
        super().__init__()
        self.out = nn.Parameter(torch.cat([mu, log_var]).to(DT))

    def forward(self, x):
        return self.out.expand(x.shape[0], -1)


class LinearGaussianDecoder(nn.Module):
    """z -> (W z + b, log s^2): the parameters of p(x | z) = N(W z + b, s^2 I)."""

    def __init__(self, W, b, log_s2):
        super().__init__()
        self.W, self.b, self.log_s2 = W, b, log_s2

    def forward(self, z):
        mean = z @ self.W.t() + self.b
        return torch.cat([mean, torch.full_like(mean, self.log_s2)], dim=1)


def linear_gaussian(W, b, s2, x):
    """Exact log p(x) and the posterior p(z | x) of the linear-Gaussian model (torch.distributions)."""
    d_x, d_z = W.shape
    log_px = MultivariateNormal(b, W @ W.t() + s2 * torch.eye(d_x, dtype=DT)).log_prob(x)
    S = torch.linalg.inv(torch.eye(d_z, dtype=DT) + W.t() @ W / s2)
    m = (S @ W.t() @ (x - b)) / s2
    return log_px, MultivariateNormal(m, S)


def make_model(W, b, s2, mu, log_var):
    d_x, d_z = W.shape
    return VAE((d_x,), latent_dim=d_z, decoder="gaussian", encoder_net=ConstantEncoder(mu, log_var),
               decoder_net=LinearGaussianDecoder(W, b, math.log(s2))).to(DT)


@pytest.fixture
def lg():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 2, generator=g, dtype=DT)
    b = torch.randn(3, generator=g, dtype=DT)
    x = torch.tensor([0.7, -1.2, 2.0], dtype=DT)
    return W, b, 0.5, x


def test_elbo_identity_log_px_equals_elbo_plus_kl_to_the_posterior(lg):
    """log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) for an arbitrary diagonal q, with the ELBO estimated by the
    library (VAE.loss / negative_elbo) and log p(x), the posterior and the KL exact (torch.distributions)."""
    W, b, s2, x = lg
    torch.manual_seed(1)
    mu, log_var = torch.tensor([0.3, -0.4], dtype=DT), torch.tensor([-1.0, -0.2], dtype=DT)
    model = make_model(W, b, s2, mu, log_var)
    log_px, posterior = linear_gaussian(W, b, s2, x)
    q = MultivariateNormal(mu, torch.diag(log_var.exp()))
    kl_q_post = kl_divergence(q, posterior)

    m = 200_000
    xs = x.expand(m, -1)
    mus, log_vars = model.encode(xs)
    recon, kl = negative_elbo(lambda z: model.log_likelihood(xs, z), mus, log_vars)
    elbo_draws = -(recon + kl).detach()
    se = elbo_draws.std() / math.sqrt(m)
    assert abs(elbo_draws.mean() - (log_px - kl_q_post)) < 4 * se
    assert kl_q_post > 50 * se  # the identity is not met by ELBO = log p(x) alone
    # the model's loss reports the same estimate: "elbo" = -(recon + kl), "loss" = recon + beta kl (beta = 1)
    terms = model.loss(x.expand(20_000, -1))
    assert abs(terms["elbo"].item() - (log_px - kl_q_post).item()) < 4 * se * math.sqrt(m / 20_000)
    torch.testing.assert_close(terms["loss"], -terms["elbo"])


def test_elbo_is_exact_and_iwae_weights_constant_when_q_is_the_posterior():
    """With orthogonal columns of W the posterior is diagonal; for q equal to it every importance weight
    p(x|z) p(z) / q(z|x) equals p(x), so every IWAE estimate (any k, k = 1 included) is log p(x) exactly,
    and the ELBO of the loss (analytic KL, one draw each) is log p(x) within its Monte Carlo error."""
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=DT)
    b, s2, x = torch.tensor([0.1, -0.3, 0.5], dtype=DT), 0.8, torch.tensor([1.5, -0.7, 0.2], dtype=DT)
    log_px, posterior = linear_gaussian(W, b, s2, x)
    model = make_model(W, b, s2, posterior.mean, posterior.covariance_matrix.diagonal().log())
    torch.manual_seed(8)
    m = 100_000
    xs = x.expand(m, -1)
    recon, kl = negative_elbo(lambda z: model.log_likelihood(xs, z), *model.encode(xs))
    draws = -(recon + kl).detach()
    assert abs(draws.mean() - log_px) < 4 * draws.std() / math.sqrt(m)
    for k in (1, 7, 100):
        torch.testing.assert_close(model.iwae_log_prob(x[None], k=k, max_decoded=3), log_px[None], atol=1e-9, rtol=0)


def test_kl_to_standard_normal_against_monte_carlo_and_torch():
    """KL(N(mu, diag sigma^2) || N(0, I)) in closed form vs E_q[log q(z) - log p(z)] by Monte Carlo
    (torch's Normal densities) within 4 standard errors, and vs torch.distributions.kl_divergence."""
    torch.manual_seed(2)
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]], dtype=DT)
    log_var = torch.tensor([[0.2, -1.5, 0.7], [1.0, 0.0, -3.0]], dtype=DT)
    kl = kl_to_standard_normal(mu, log_var)
    q, p = Normal(mu, (0.5 * log_var).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = q.sample((200_000,))  # (M, 2, 3)
    draws = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (M, 2)
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - kl).abs() < 4 * se).all()
    torch.testing.assert_close(kl, kl_divergence(q, p).sum(-1))


def test_reparameterisation_gradient_is_unbiased():
    """d/dmu and d/dlog_var of E_q[exp(a z)], z = mu + sigma eps: the mean of R independent reparameterised
    estimates matches the exact gradient of exp(a mu + a^2 sigma^2 / 2) within 4 standard errors."""
    torch.manual_seed(3)
    a, mu0, log_var0, r, m = 0.8, 0.3, -0.5, 400, 500
    mu = torch.full((r,), mu0, dtype=DT, requires_grad=True)
    log_var = torch.full((r,), log_var0, dtype=DT, requires_grad=True)
    z = reparameterize(mu.expand(m, r), log_var.expand(m, r))  # m draws for each of r replicas
    torch.exp(a * z).mean(0).sum().backward()
    mu_e, lv_e = torch.tensor(mu0, dtype=DT, requires_grad=True), torch.tensor(log_var0, dtype=DT, requires_grad=True)
    torch.exp(a * mu_e + a ** 2 * lv_e.exp() / 2).backward()  # the exact expectation
    for est, exact in ((mu.grad, mu_e.grad), (log_var.grad, lv_e.grad)):
        assert abs(est.mean() - exact) < 4 * est.std() / math.sqrt(r)
        assert abs(exact) > 20 * est.std() / math.sqrt(r)  # a zero or sign-flipped gradient would fail


def test_elbo_gradient_through_the_model_matches_the_exact_gradient(lg):
    """The reparameterised gradient of VAE.loss w.r.t. q's parameters vs autograd of the closed-form ELBO
    E_q log N(x; W z + b, s^2 I) - KL(q || p(z)) = log N(x; W mu + b, s^2 I) - tr(W diag(v) W^T) / (2 s^2) - KL."""
    W, b, s2, x = lg
    torch.manual_seed(4)
    mu, log_var = torch.tensor([0.3, -0.4], dtype=DT), torch.tensor([-1.0, -0.2], dtype=DT)
    grads = []
    for _ in range(30):
        model = make_model(W, b, s2, mu, log_var)
        model.loss(x.expand(2000, -1))["loss"].backward()
        grads.append(model.encoder_net.out.grad.clone())
    grads = torch.stack(grads)
    params = torch.cat([mu, log_var]).requires_grad_(True)
    m, lv = params[:2], params[2:]
    exact_elbo = (MultivariateNormal(W @ m + b, s2 * torch.eye(3, dtype=DT)).log_prob(x)
                  - (W * W * lv.exp()).sum() / (2 * s2) - kl_divergence(Normal(m, (lv / 2).exp()), Normal(0.0, 1.0)).sum())
    (exact_grad,) = torch.autograd.grad(-exact_elbo, params)
    se = grads.std(0) / math.sqrt(len(grads))
    assert ((grads.mean(0) - exact_grad).abs() < 4 * se + 1e-9).all(), (grads.mean(0), exact_grad)


def test_iwae_bound_non_decreasing_in_k_and_converging_to_log_px(lg):
    """E[L_k] <= E[L_2k] <= log p(x) and L_k -> log p(x) (Burda et al. 2016, Theorem 1), for a q that is not
    the posterior; estimated over R independent replicas, compared with the exact log p(x)."""
    W, b, s2, x = lg
    torch.manual_seed(5)
    log_px, posterior = linear_gaussian(W, b, s2, x)
    mu = posterior.mean + torch.tensor([0.5, -0.5], dtype=DT)  # a poor q: shifted, too wide, no correlation
    log_var = posterior.covariance_matrix.diagonal().log() + 0.7
    model = make_model(W, b, s2, mu, log_var)
    r = 2000
    xs = x.expand(r, -1)
    means, ses = [], []
    for k in (1, 4, 16, 64):
        values = model.iwae_log_prob(xs, k=k, batch_size=r, max_decoded=20_000)  # r independent L_k
        means.append(values.mean())
        ses.append(values.std() / math.sqrt(r))
    for (m1, s1), (m2, s2_) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert m2 > m1 - 3 * math.hypot(s1, s2_)  # non-decreasing in expectation
        assert m2 < log_px + 3 * s2_  # a lower bound
    assert means[-1] - means[0] > 20 * math.hypot(ses[0], ses[-1])  # and it really improves with k
    big = model.iwae_log_prob(x.expand(20, -1), k=20_000, batch_size=20, max_decoded=50_000)
    assert abs(big.mean() - log_px) < 0.02 and abs(big.mean() - log_px) < 0.05 * (log_px - means[0])
    # the library's bound as a function (no model): the same estimator
    torch.manual_seed(6)
    lw = iwae_bound(lambda z: MultivariateNormal(z @ W.t() + b, s2 * torch.eye(3, dtype=DT)).log_prob(x),
                    mu.expand(r, -1), log_var.expand(r, -1), k=16, chunk=5)
    assert abs(lw.mean() - means[2]) < 4 * math.hypot(ses[2], lw.std() / math.sqrt(r))


def test_iwae_of_a_bernoulli_vae_against_quadrature():
    """A Bernoulli VAE with a 1D latent and 4 pixels (small MLPs, random weights): log p(x) = log of the
    integral of p(x|z) N(z; 0, 1) over z by the trapezoid rule; IWAE with k = 4000 approaches it from below."""
    torch.manual_seed(7)
    enc = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    dec = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 4))
    with torch.no_grad():
        enc[2].bias += torch.tensor([1.0, 0.5])  # a q shifted off the posterior: a visible ELBO gap
    model = VAE((4,), latent_dim=1, decoder="bernoulli", encoder_net=enc, decoder_net=dec).to(DT)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=DT)
    grid = torch.linspace(-10, 10, 20_001, dtype=DT)
    with torch.no_grad():
        logits = dec(grid[:, None])  # (G, 4)
    log_joint = (x[:, None, :] * logits - torch.nn.functional.softplus(logits)).sum(-1) + Normal(0.0, 1.0).log_prob(grid)
    log_px = torch.log(torch.trapezoid(log_joint.exp(), grid, dim=1))  # (2,)
    est = model.iwae_log_prob(x.repeat(50, 1), k=4000).view(50, 2)
    assert ((est.mean(0) - log_px).abs() < 0.01).all(), (est.mean(0), log_px)
    elbo = model.iwae_log_prob(x.repeat(2000, 1), k=1).view(2000, 2)
    assert (elbo.mean(0) < log_px - 10 * elbo.std(0) / math.sqrt(2000)).all()  # the ELBO: a looser bound


def test_importance_log_weights_estimate_p_x_without_bias_and_give_every_L_k(lg):
    """E_q[w] = p(x) for w = p(x|z) p(z) / q(z|x) (importance sampling is unbiased): the mean of exp(log w) / p(x)
    over 200,000 draws from a poor q is 1 within 4 standard errors, p(x) exact. From the same draws,
    iwae_from_log_weights gives L_1 (the mean log-weight), the single L_K, the brute-force mean over groups for
    other k, values non-decreasing in k and below log p(x), and the same L_K as iwae_log_prob with the same seed."""
    W, b, s2, x = lg
    log_px, posterior = linear_gaussian(W, b, s2, x)
    mu = posterior.mean + torch.tensor([0.5, -0.5], dtype=DT)  # shifted and wider than the posterior
    log_var = posterior.covariance_matrix.diagonal().log() + 0.7
    model = make_model(W, b, s2, mu, log_var)
    big = 200_000
    torch.manual_seed(9)
    log_w = model.importance_log_weights(x[None], k=big, max_decoded=50_000)
    assert log_w.shape == (big, 1)
    ratio = (log_w[:, 0] - log_px).exp()
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / math.sqrt(big)
    assert ratio.std() / math.sqrt(big) < 0.01  # the check is sharp enough to see a constant off by 1%
    torch.manual_seed(9)
    torch.testing.assert_close(model.iwae_log_prob(x[None], k=big, max_decoded=50_000),
                               torch.logsumexp(log_w, 0) - math.log(big))
    torch.testing.assert_close(iwae_from_log_weights(log_w, 1), log_w.mean(0))
    torch.testing.assert_close(iwae_from_log_weights(log_w, big), torch.logsumexp(log_w, 0) - math.log(big))
    groups = [torch.logsumexp(log_w[j:j + 40, 0], 0) - math.log(40) for j in range(0, big, 40)]
    torch.testing.assert_close(iwae_from_log_weights(log_w, 40), torch.stack(groups).mean()[None])
    bounds = [iwae_from_log_weights(log_w, k).item() for k in (1, 10, 100, 1000)]
    assert all(a < b_ for a, b_ in itertools.pairwise(bounds)) and bounds[-1] < log_px.item()
    with pytest.raises(ValueError, match="divisor"):
        iwae_from_log_weights(log_w, 7)
