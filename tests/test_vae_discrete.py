"""Discrete latents against independent computations: VQ (nearest code, straight-through gradient, codebook
and commitment gradients, perplexity, dead codes; van den Oord et al. 2017) and Gumbel-max / Gumbel-softmax
(Jang et al. 2017; Maddison et al. 2017)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib.vae import (
    VectorQuantizer,
    gumbel_max_sample,
    gumbel_softmax,
    nearest_code,
    perplexity,
    sample_gumbel,
    straight_through,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_nearest_code_against_brute_force():
    g = torch.Generator().manual_seed(0)
    z_e, codebook = torch.randn(500, 6, generator=g), torch.randn(40, 6, generator=g)
    brute = np.array([np.argmin([np.sum((z - e) ** 2) for e in codebook.numpy()]) for z in z_e.numpy()])
    assert (nearest_code(z_e, codebook).numpy() == brute).all()


def test_straight_through_value_is_z_q_and_gradient_is_the_gradient_at_z_q():
    """f(z_e + sg[z_q - z_e]) has the value f(z_q) and, w.r.t. z_e, the gradient df/dz evaluated at z_q."""
    torch.manual_seed(1)
    vq = VectorQuantizer(num_codes=16, code_dim=4)
    with torch.no_grad():
        vq.codebook.normal_()
    z_e = torch.randn(3, 4, 5, 5, requires_grad=True)
    weights = torch.randn(3, 4, 5, 5)

    def f(z):  # any nonlinear function of the decoder input
        return (torch.sin(z) * weights).sum() + (z ** 3).sum()

    out = vq(z_e)
    f(out["z_q"]).backward()
    z_q = vq.codebook.detach()[out["codes"]].permute(0, 3, 1, 2).clone().requires_grad_(True)
    f(z_q).backward()  # the gradient at z_q, computed on its own
    torch.testing.assert_close(out["z_q"], z_q.detach())
    torch.testing.assert_close(z_e.grad, z_q.grad)
    assert not torch.allclose(z_e.grad, torch.cos(z_e.detach()) * weights + 3 * z_e.detach() ** 2)  # != df at z_e
    # and the bare function: value of z_q, gradient 1 w.r.t. z_e, none to z_q
    a, b = torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)
    straight_through(a, b).sum().backward()
    assert torch.equal(a.grad, torch.ones(5)) and b.grad is None


def test_codebook_and_commitment_gradients_follow_the_stop_gradients():
    """L = ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 (per example, summed over positions; batch mean):
    dL/de_j = (2 / N) sum_{positions using j} (e_j - z_e), dL/dz_e = (2 beta / N) (z_e - e_k), by a loop."""
    torch.manual_seed(2)
    n, beta = 4, 0.25
    vq = VectorQuantizer(num_codes=6, code_dim=3)
    with torch.no_grad():
        vq.codebook.normal_()
    z_e = torch.randn(n, 3, 2, 2, requires_grad=True)
    out = vq(z_e)
    (out["codebook_loss"].mean() + beta * out["commitment_loss"].mean()).backward()
    e, z, codes = vq.codebook.detach().numpy(), z_e.detach().numpy(), out["codes"].numpy()
    grad_e, grad_z = np.zeros_like(e), np.zeros_like(z)
    for i in range(n):
        for r in range(2):
            for c in range(2):
                k = codes[i, r, c]
                grad_e[k] += 2 / n * (e[k] - z[i, :, r, c])
                grad_z[i, :, r, c] = 2 * beta / n * (z[i, :, r, c] - e[k])
    np.testing.assert_allclose(vq.codebook.grad.numpy(), grad_e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_e.grad.numpy(), grad_z, rtol=1e-5, atol=1e-6)


def test_perplexity_counts_effective_codes():
    assert perplexity(torch.arange(8).repeat(5), 32).item() == pytest.approx(8.0)
    assert perplexity(torch.zeros(100, dtype=torch.long), 32).item() == pytest.approx(1.0)
    codes = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    p = np.array([0.5, 0.3, 0.2])
    assert perplexity(codes, 4).item() == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)


def test_dead_codes_are_counted_and_moved_onto_encoder_outputs():
    """Codes far from every encoder output are never chosen; after dead_after training steps the reset
    moves exactly those onto encoder outputs of the batch, after which they are chosen."""
    torch.manual_seed(3)
    vq = VectorQuantizer(num_codes=8, code_dim=2, dead_after=3)
    with torch.no_grad():
        vq.codebook[:4] = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
        vq.codebook[4:] = 100.0  # dead: no encoder output comes near
    z_e = torch.randn(16, 2, 4, 4)
    for step in range(3):
        assert vq.reset_dead_codes(z_e) == 0  # not dead for long enough yet
        out = vq(z_e)
        assert out["codes"].max() < 4 and out["codes_used"].item() == pytest.approx(0.5)
    assert vq.steps_unused[4:].tolist() == [3] * 4 and vq.steps_unused[:4].tolist() == [0] * 4
    alive = vq.codebook[:4].detach().clone()
    assert vq.reset_dead_codes(z_e) == 4
    vectors = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    for code in vq.codebook[4:].detach():  # each new code is one of the encoder outputs
        assert (vectors - code).abs().sum(1).min() == 0
    assert torch.equal(vq.codebook[:4].detach(), alive) and vq.steps_unused.sum() == 0
    assert vq(z_e)["codes"].max() >= 4  # the moved codes are now chosen
    assert VectorQuantizer(8, 2, dead_after=0).reset_dead_codes(z_e) == 0  # 0 turns it off


def test_gumbel_noise_has_the_gumbel_distribution():
    g = sample_gumbel((100_000,), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert stats.kstest(g.numpy(), stats.gumbel_r.cdf).pvalue > 1e-3
    assert stats.kstest(g.numpy(), stats.norm(g.mean().item(), g.std().item()).cdf).pvalue < 1e-6  # the test has power


def test_gumbel_max_frequencies_match_the_probabilities():
    """argmax(log pi + g) ~ Categorical(pi): chi-square goodness of fit (scipy) on 200,000 draws, and the same
    test rejects slightly wrong probabilities (so it can fail)."""
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.2])
    draws = gumbel_max_sample(logits.expand(200_000, -1), generator=torch.Generator().manual_seed(5))
    counts = torch.bincount(draws, minlength=5).numpy()
    probs = torch.softmax(logits.double(), 0).numpy()
    assert stats.chisquare(counts, probs * counts.sum()).pvalue > 1e-3
    wrong = torch.softmax(1.05 * logits.double(), 0).numpy()
    assert stats.chisquare(counts, wrong * counts.sum()).pvalue < 1e-6


def test_gumbel_softmax_tends_to_one_hot_as_the_temperature_falls():
    torch.manual_seed(6)
    logits = torch.randn(1000, 7, dtype=torch.float64)
    g = sample_gumbel(logits.shape, dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot((logits + g).argmax(-1), 7).double()  # the Gumbel-max sample
    top2 = (logits + g).topk(2, dim=-1).values
    clear = top2[:, 0] - top2[:, 1] > 0.01  # rows without a near tie (a tie needs tau below the margin)
    assert clear.float().mean() > 0.95
    gaps = [(gumbel_softmax(logits, tau, gumbel=g) - one_hot)[clear].abs().max().item()
            for tau in (10.0, 1.0, 0.1, 1e-2, 1e-4)]
    assert all(a > b for a, b in itertools.pairwise(gaps)) and gaps[-1] < 1e-12
    y = gumbel_softmax(logits, 100.0, gumbel=g)
    assert (y - 1 / 7).abs().max() < 0.05  # high temperature: near uniform
    torch.testing.assert_close(y.sum(-1), torch.ones(1000, dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature"):
        gumbel_softmax(logits, 0.0)


def test_hard_gumbel_softmax_is_one_hot_forward_with_the_soft_gradient():
    torch.manual_seed(7)
    logits = torch.randn(50, 4, requires_grad=True)
    g, w = sample_gumbel(logits.shape), torch.randn(50, 4)
    hard = gumbel_softmax(logits, 0.5, hard=True, gumbel=g)
    torch.testing.assert_close(hard.detach(), torch.nn.functional.one_hot((logits + g).argmax(-1), 4).float())
    (grad_hard,) = torch.autograd.grad((hard * w).sum(), logits)
    (grad_soft,) = torch.autograd.grad((gumbel_softmax(logits, 0.5, gumbel=g) * w).sum(), logits)
    torch.testing.assert_close(grad_hard, grad_soft)
    assert grad_soft.abs().sum() > 0
