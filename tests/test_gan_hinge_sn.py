"""The hinge losses and spectral normalisation (SNGAN's recipe), checked against what they claim:
D's pointwise optimum under the hinge loss, a non-saturating generator gradient, singular values of 1.
(A short SNGAN run is in test_gan.py.)"""
from __future__ import annotations

import pytest
import torch

from course_lib.gan import build_dcgan, discriminator_loss_hinge, generator_loss_hinge

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_hinge_discriminator_optimum_is_the_sign_of_the_density_difference():
    """Independent check of the theory: train one free logit per point of a discrete space with the library's
    loss on samples; the minimiser of E_data relu(1 - l) + E_g relu(1 + l) is l = +1 where the data is more
    frequent than the generator's samples and -1 where it is less (not the log-ratio of the minimax D*)."""
    g = torch.Generator().manual_seed(0)
    p_data = torch.tensor([0.30, 0.25, 0.05, 0.10, 0.20, 0.10])
    p_g = torch.tensor([0.05, 0.10, 0.30, 0.25, 0.10, 0.20])
    x_real = torch.multinomial(p_data, 20_000, replacement=True, generator=g)
    x_fake = torch.multinomial(p_g, 20_000, replacement=True, generator=g)
    logits = torch.zeros(6, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        discriminator_loss_hinge(logits[x_real], logits[x_fake]).backward()
        opt.step()
    expected = torch.sign(p_data - p_g)
    torch.testing.assert_close(logits.detach(), expected, atol=0.06, rtol=0)  # within one step of the kink
    assert discriminator_loss_hinge(expected[x_real], expected[x_fake]) < discriminator_loss_hinge(
        2 * expected[x_real], 2 * expected[x_fake]) + 1e-6  # pushing past the margin gains nothing


def test_hinge_generator_gradient_never_saturates():
    """d(N * loss)/d l = -1 for every fake logit, even where D rejects the fake (l -> -inf) and the
    minimax loss's gradient vanishes."""
    logits = torch.tensor([-30.0, -6.0, 0.0, 6.0], requires_grad=True)
    (grad,) = torch.autograd.grad(generator_loss_hinge(logits) * len(logits), logits)
    torch.testing.assert_close(grad, -torch.ones(4))


def test_spectral_norm_discriminator_has_unit_singular_values_and_no_batch_norm():
    """After some power iterations (one per training-mode forward pass) every layer's effective weight, as
    the matrix [out, in * k * k], has largest singular value 1 by SVD; the output layer is then 1-Lipschitz."""
    torch.manual_seed(0)
    D = build_dcgan((1, 28, 28), num_classes=10, base=8, spectral_norm=True).D.train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    for _ in range(30):
        D(x, y)
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 4
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)
    D.eval()
    h1, h2 = torch.randn(100, D.out.in_features), torch.randn(100, D.out.in_features)
    assert ((D.out(h1) - D.out(h2)).abs().squeeze(1) <= (h1 - h2).norm(dim=1) + 1e-5).all()
    plain = build_dcgan((1, 28, 28), num_classes=10, base=8).D
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) == 2  # the default keeps DCGAN's D


def test_unknown_discriminator_loss_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"discriminator_loss must be one of \['hinge', 'minimax'\], got 'wgan'"):
        build_dcgan((1, 8, 8), base=4, discriminator_loss="wgan")
