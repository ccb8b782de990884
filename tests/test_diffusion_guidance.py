"""Guidance and conditioning (course_lib.diffusion.guidance), checked on a 2D Gaussian mixture whose
conditional and unconditional noise predictors and whose classifier p(y | x_t) are exact."""
import math

import pytest
import torch
from torch import nn

from course_lib.diffusion import GaussianDiffusion, UNet, UNetConfig, build_ddpm
from course_lib.diffusion.checks_07 import cfg_identity
from course_lib.diffusion.ddim import ddim_sample
from course_lib.diffusion.guidance import (
    ConcatConditioned,
    NoisyClassifier,
    cfg_combine,
    cfg_eps_fn,
    classifier_guided_ddpm_sample,
    classifier_guided_eps_fn,
    classifier_log_prob_grad,
    classifier_loss,
    drop_labels,
)
from course_lib.diffusion.toy import mixture_eps_star

CENTRES = torch.tensor([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
STD, K = 0.3, 4


class ExactMixtureEps(nn.Module):
    """eps*(x_t, t, y): E[eps | x_t, y] of component y, or of the whole mixture for y = K (no label)."""

    def __init__(self, alpha_bars):
        super().__init__()
        ab = alpha_bars.double()
        self.parts = [mixture_eps_star(ab, CENTRES[k:k + 1], STD) for k in range(K)]
        self.whole = mixture_eps_star(ab, CENTRES, STD)

    def forward(self, x_t, t, y=None):
        out = self.whole(x_t, t)
        if y is not None:
            for k in range(K):
                out = torch.where((y == k)[:, None], self.parts[k](x_t, t), out)
        return out


class ExactClassifier(nn.Module):
    """log p(y | x_t) up to a constant: the diffused components' log densities (equal weights)."""

    def __init__(self, alpha_bars):
        super().__init__()
        self.ab = alpha_bars.double()

    def forward(self, x_t, t):
        ab = self.ab[t][:, None, None].to(x_t.dtype)
        v = ab * STD ** 2 + 1 - ab
        return -((x_t[:, None, :] - ab.sqrt() * CENTRES.to(x_t.dtype)) ** 2).sum(-1) / (2 * v[..., 0])


@pytest.fixture(scope="module")
def toy():
    d = GaussianDiffusion(nn.Identity(), data_shape=(2,), T=100)
    d.model = ExactMixtureEps(d.alpha_bars)
    return d


def nearest_centre(x):
    return torch.cdist(x, CENTRES).argmin(1)


def test_cfg_combination_is_the_guided_score():
    out = cfg_identity(cfg_combine)
    assert out["max_abs_error"] < 1e-10


def test_classifier_guidance_at_scale_one_is_the_conditional_model(toy):
    """grad log p(x_t) + grad log p(y | x_t) = grad log p(x_t | y): exact eps* of one component."""
    classifier = ExactClassifier(toy.alpha_bars)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) * 3
    t = torch.randint(1, 101, (500,), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, K, (500,), generator=torch.Generator().manual_seed(2))
    uncond = lambda x_t, time: toy.model(x_t, time)
    guided = classifier_guided_eps_fn(uncond, classifier, y, 1.0, toy.alpha_bars)(x, t)
    torch.testing.assert_close(guided, toy.model(x, t, y), atol=2e-4, rtol=1e-4)


def test_log_prob_gradient_matches_finite_differences():
    torch.manual_seed(0)
    clf = NoisyClassifier(width=8, emb_dim=16).double()
    x, t, y = torch.randn(2, 1, 28, 28, dtype=torch.float64), torch.tensor([3, 700]), torch.tensor([4, 1])
    g = classifier_log_prob_grad(clf, x, t, y)
    for n, i, j in [(0, 5, 7), (1, 20, 3)]:
        h = 1e-6
        xp, xm = x.clone(), x.clone()
        xp[n, 0, i, j] += h
        xm[n, 0, i, j] -= h
        fd = (torch.log_softmax(clf(xp, t), 1)[n, y[n]] - torch.log_softmax(clf(xm, t), 1)[n, y[n]]) / (2 * h)
        assert abs(g[n, 0, i, j].item() - fd.item()) < 1e-6 * max(1.0, abs(fd.item()))


def test_cfg_eps_fn_combines_one_batched_call(toy):
    calls = []

    class Counting(nn.Module):
        def forward(self, x, t, y=None):
            calls.append(x.shape[0])
            return toy.model(x, t, y)

    x, t, y = torch.randn(8, 2), torch.full((8,), 40), torch.arange(8) % K
    out = cfg_eps_fn(Counting(), y, 3.0, null_label=K)(x, t)
    assert calls == [16]
    torch.testing.assert_close(out, 4 * toy.model(x, t, y) - 3 * toy.model(x, t))
    cfg_eps_fn(Counting(), y, 0.0, null_label=K)(x, t)
    assert calls[-1] == 8


def test_guided_samplers_land_in_the_requested_component(toy):
    y = torch.arange(400) % K
    for w in (0.0, 3.0):
        x = ddim_sample(toy, 400, 50, eps_fn=cfg_eps_fn(toy.model, y, w, K), clip_x0=False,
                        generator=torch.Generator().manual_seed(0))
        assert (nearest_centre(x) == y).float().mean() > 0.99
    # unguided samples visit every component about equally: guidance is what picks one
    free = ddim_sample(toy, 400, 50, clip_x0=False, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(nearest_centre(free), minlength=K).float() / 400
    assert share.min() > 0.15
    x = classifier_guided_ddpm_sample(toy, ExactClassifier(toy.alpha_bars), 2, 200, scale=1.0,
                                      generator=torch.Generator().manual_seed(0))
    assert (nearest_centre(x) == 2).float().mean() > 0.97


def test_large_guidance_weight_shrinks_the_spread(toy):
    y = torch.zeros(2000, dtype=torch.long)
    spread = {}
    for w in (0.0, 5.0):
        x = ddim_sample(toy, 2000, 50, eps_fn=cfg_eps_fn(toy.model, y, w, K), clip_x0=False,
                        generator=torch.Generator().manual_seed(5))
        spread[w] = x.std(0).mean().item()
    assert spread[5.0] < 0.9 * spread[0.0], spread


def test_drop_labels_frequency_and_errors():
    y = torch.zeros(20_000, dtype=torch.long)
    dropped = (drop_labels(y, 0.2, 10, torch.Generator().manual_seed(0)) == 10).float()
    assert abs(dropped.mean().item() - 0.2) / math.sqrt(0.2 * 0.8 / 20_000) < 5
    assert torch.equal(drop_labels(y, 0.0, 10), y)
    with pytest.raises(ValueError, match="must lie in"):
        drop_labels(y, 1.5, 10)


def test_label_dropout_in_the_loss_only_while_training():
    seen = []

    class Spy(nn.Module):
        def forward(self, x, t, y=None):
            seen.append(y.clone())
            return torch.zeros_like(x)

    d = GaussianDiffusion(Spy(), data_shape=(2,), T=10, label_dropout=0.5, null_label=9)
    y = torch.zeros(4000, dtype=torch.long)
    d.loss(torch.zeros(4000, 2), y)
    share = (seen[-1] == 9).float().mean().item()
    assert 0.45 < share < 0.55
    d.eval()
    d.loss(torch.zeros(4000, 2), y)
    assert (seen[-1] == 0).all()
    with pytest.raises(ValueError, match="needs null_label"):
        GaussianDiffusion(Spy(), data_shape=(2,), T=10, label_dropout=0.1)
    with pytest.raises(ValueError, match="needs a class-conditional network"):
        build_ddpm((1, 28, 28), label_dropout=0.1)


def test_noisy_classifier_and_its_loss():
    d = build_ddpm((1, 28, 28), T=100)
    clf = NoisyClassifier()
    x0, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)
    assert clf(x0, torch.full((8,), 5)).shape == (8, 10)
    out = classifier_loss(d, clf, x0, y)
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in clf.parameters())
    assert 0 <= out["accuracy"] <= 1


def test_concat_conditioning_shapes_and_errors():
    net = ConcatConditioned(UNet(UNetConfig(in_channels=2, out_channels=1, base_channels=8)))
    d = GaussianDiffusion(net, data_shape=(1, 28, 28), T=20)
    x0, cond = torch.rand(3, 1, 28, 28) * 2 - 1, torch.zeros(3, 1, 28, 28)
    assert torch.isfinite(d.loss(x0, cond)["loss"])
    assert ddim_sample(d, 3, 4, y=cond).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="needs the condition image as y"):
        d.loss(x0)
    with pytest.raises(ValueError, match="needs the condition image as y"):
        net(x0, torch.ones(3, dtype=torch.long), torch.zeros(3, 1, 14, 14))
