"""course_lib.gan: the lecture's losses and identities checked independently, the networks, the PatchGAN's
receptive field by autograd, CycleGAN's step, and training through the zoo and the CLI."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.distance import jensenshannon

from course_lib.__main__ import main
from course_lib.checkpoint import load_checkpoint
from course_lib.gan import (CycleGAN, PatchDiscriminator, build_dcgan, discriminator_loss,
                            generator_loss_non_saturating, generator_loss_saturating, truncated_normal)
from course_lib.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_generator_gradients_saturate_only_for_the_minimax_loss():
    """d loss / d logit at D(G(z)) -> 0: -sigmoid(l) -> 0 (saturating) vs -(1 - sigmoid(l)) -> -1 (non-saturating)."""
    logits = torch.tensor([-12.0, -6.0, 0.0, 6.0], requires_grad=True)
    (g_sat,) = torch.autograd.grad(generator_loss_saturating(logits) * len(logits), logits)
    (g_ns,) = torch.autograd.grad(generator_loss_non_saturating(logits) * len(logits), logits)
    d = torch.sigmoid(logits.detach())
    torch.testing.assert_close(g_sat, -d)
    torch.testing.assert_close(g_ns, -(1 - d))
    assert abs(g_sat[0]) < 1e-5 and abs(g_ns[0] + 1) < 1e-5  # D rejects the fake: only the heuristic loss pushes


def _two_densities(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    p_data, p_g = torch.rand(n, generator=g, dtype=torch.float64) + 0.1, torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    return p_data / p_data.sum(), p_g / p_g.sum()


def test_trained_discriminator_reaches_the_optimal_discriminator():
    """Independent check: minimise the discriminator loss (expectations as exact sums) by gradient descent over
    one free logit per point of a discrete space; the optimum must be D*(x) = p_data / (p_data + p_g)."""
    p_data, p_g = _two_densities()
    logits = torch.zeros(len(p_data), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -(p_data * torch.nn.functional.logsigmoid(logits) + p_g * torch.nn.functional.logsigmoid(-logits)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(torch.sigmoid(logits.detach()), p_data / (p_data + p_g), atol=1e-7, rtol=1e-6)
    # The library's loss is the same objective on samples: its per-sample form agrees at the optimum.
    x_real, x_fake = torch.tensor([0, 0, 1]), torch.tensor([2, 3])
    by_hand = -(torch.log(torch.sigmoid(logits[x_real])).mean() + torch.log(1 - torch.sigmoid(logits[x_fake])).mean())
    torch.testing.assert_close(discriminator_loss(logits[x_real], logits[x_fake]), by_hand)


def test_value_at_the_optimal_discriminator_is_minus_log4_plus_twice_the_jsd():
    """V(D*, G) = -log 4 + 2 JSD(p_data || p_g), with JSD from scipy (an independent implementation)."""
    for seed in range(3):
        p_data, p_g = _two_densities(seed=seed)
        d_star = p_data / (p_data + p_g)
        value = (p_data * d_star.log()).sum() + (p_g * (1 - d_star).log()).sum()
        jsd = jensenshannon(p_data.numpy(), p_g.numpy()) ** 2  # scipy returns the square root, natural log
        assert value.item() == pytest.approx(-math.log(4) + 2 * jsd, abs=1e-12)
    p = _two_densities()[0]  # at p_g = p_data: D* = 1/2 and V = -log 4
    assert ((p * math.log(0.5)).sum() * 2).item() == pytest.approx(-math.log(4))


def test_patchgan_receptive_field_by_autograd():
    """The analytic patch size equals the extent of the input pixels one output logit depends on."""
    torch.manual_seed(0)
    d = PatchDiscriminator(channels=1, base=4).double()
    x = torch.randn(1, 1, 40, 40, dtype=torch.float64, requires_grad=True)
    out = d(x)
    i, j = out.shape[2] // 2, out.shape[3] // 2
    (grad,) = torch.autograd.grad(out[0, 0, i, j], x)
    rows, cols = grad[0, 0].abs().gt(0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == cols.max() - cols.min() + 1 == d.receptive_field() == 18
    assert tuple(d(torch.randn(2, 1, 28, 28, dtype=torch.float64)).shape) == (2, 1, 7, 7)  # 49 overlapping patches per image


def test_dcgan_shapes_conditioning_and_truncation():
    torch.manual_seed(0)
    for shape in [(1, 28, 28), (3, 32, 32)]:
        gan = build_dcgan(shape, num_classes=10, base=8)
        y = torch.arange(4)
        x = gan.sample(4, y)
        assert x.shape == (4, *shape) and x.abs().max() <= 1
        assert gan.D(x, y).shape == (4,)
        with pytest.raises(ValueError, match="class-conditional: pass labels"):
            gan.sample(4)
    z = truncated_normal((1000, 8), 0.5)
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    with pytest.raises(ValueError, match="square images"):
        build_dcgan((1, 30, 30))


def test_standing_statistics_average_the_batch_statistics_of_fresh_samples():
    """After a few steps (running statistics trail the weights), ``standing_statistics`` sets G's first
    BatchNorm to the mean of per-batch means and unbiased variances of its input, recomputed here from
    the same noise through the linear layer alone; momentum is restored, G is left in eval mode, D untouched."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (128, 1, 8, 8), dtype=torch.uint8)
    gan = build_dcgan((1, 8, 8), base=4, latent_dim=8)
    fit(gan, x, steps=5, batch_size=32, lr=1e-2, grad_clip=None, device="cpu", progress=False)
    bn, d_state = gan.G.fc[1], {k: v.clone() for k, v in gan.D.state_dict().items()}
    stale = bn.running_mean.clone()
    torch.manual_seed(1)
    gan.standing_statistics(n_batches=3, batch_size=50)
    torch.manual_seed(1)
    with torch.no_grad():
        h = [gan.G.fc[0](torch.randn(50, 8)) for _ in range(3)]  # the BatchNorm's inputs, batch by batch
    assert torch.allclose(bn.running_mean, torch.stack([b.mean(0) for b in h]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([b.var(0) for b in h]).mean(0), rtol=1e-4)
    assert not torch.allclose(bn.running_mean, stale, atol=1e-3)
    assert bn.momentum == 0.1 and not gan.G.training
    assert all(torch.equal(v, gan.D.state_dict()[k]) for k, v in d_state.items())
    conditional = build_dcgan((1, 8, 8), num_classes=3, base=4, latent_dim=8)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        conditional.standing_statistics()
    assert not conditional.standing_statistics(num_classes=3).G.training


@pytest.mark.parametrize("options", [{}, dict(spectral_norm=True, discriminator_loss="hinge", generator_loss="hinge")],
                         ids=["dcgan", "sngan_hinge"])
def test_conditional_dcgan_learns_to_separate_classes_in_a_short_run(two_families, options):
    """Two 'classes' of 8x8 images (bright top half vs bright bottom half): after a short run, samples of
    class 0 are brighter on top than on the bottom and the reverse for class 1 (also with SNGAN's recipe)."""
    x, y = two_families
    torch.manual_seed(0)
    gan = build_dcgan((1, 8, 8), num_classes=2, base=16, latent_dim=8, **options)
    fit(gan, (x, y), steps=150, batch_size=64, lr=2e-3, grad_clip=None, device="cpu", progress=False)
    gan.eval()
    samples = gan.sample(200, torch.arange(200) % 2)
    top, bottom = samples[:, :, :4].mean(dim=(1, 2, 3)), samples[:, :, 4:].mean(dim=(1, 2, 3))
    assert (top - bottom)[0::2].mean() > 0.5 and (bottom - top)[1::2].mean() > 0.5


def test_cyclegan_step_and_errors():
    torch.manual_seed(0)
    model = CycleGAN(channels=1, base=4, blocks=1)
    x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    domain = torch.arange(16) % 2
    result = fit(model, (x, domain), steps=2, batch_size=8, log_every=1, device="cpu", progress=False)
    assert {"g_loss", "d_loss", "cycle", "identity", "adversarial"} <= set(result.history)
    assert set(result.optimizers) == {"G", "D"}
    assert model.translate(torch.zeros(2, 1, 28, 28), "B").shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="y = 0 for domain A and y = 1 for domain B"):
        fit(model, x, steps=1, batch_size=8, device="cpu", progress=False)


def test_cli_trains_a_conditional_dcgan_and_samples_each_class(tmp_path):
    out = tmp_path / "dcgan"
    assert main(["train", "--model", "dcgan", "--data", "digits", "--n", "128", "--conditional", "--steps", "4",
                 "--batch-size", "32", "--option", "base=8", "--option", "k=2", "--device", "cpu",
                 "--sample-n", "20", "--out", str(out)]) == 0
    assert set(load_checkpoint(out / "checkpoint.pt")["optimizer"]) == {"D", "G"}
    tensor = tmp_path / "s.pt"
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--n", "10", "--label", "7",
                 "--out", str(tmp_path / "s.png"), "--tensor", str(tensor), "--device", "cpu"]) == 0
    samples = torch.load(tensor)
    assert samples.shape == (10, 1, 8, 8) and samples.dtype == torch.uint8
