"""InfoGAN: the mutual-information lower bound checked exactly on a discrete joint distribution, and a
short run in which the code finds the two families of an unlabelled toy set."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.gan import DCGANDiscriminator, DCGANGenerator, InfoGAN, build_infogan, mutual_information_bound
from course_lib.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _joint_as_samples(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """counts [K, X] of (c, x) pairs -> the pairs listed that many times: c [N], x [N]."""
    c, x = torch.nonzero(torch.ones_like(counts), as_tuple=True)
    reps = counts.flatten()
    return c.repeat_interleave(reps), x.repeat_interleave(reps)


def test_bound_is_below_the_mutual_information_and_tight_at_the_posterior():
    # exact: a joint of K = 3 uniform codes and 4 outcomes, the samples listing it in proportion
    counts = torch.tensor([[6, 2, 1, 1], [1, 5, 3, 1], [2, 2, 2, 4]])      # every row sums to 10: c uniform
    c, x = _joint_as_samples(counts)
    p = counts.double() / counts.sum()                                     # p(c, x)
    mi = (p * (p / (p.sum(1, keepdim=True) * p.sum(0, keepdim=True))).log()).sum()
    posterior = p / p.sum(0, keepdim=True)                                 # p(c | x) [K, X]
    at_posterior = mutual_information_bound(posterior.T.log()[x], c)
    torch.testing.assert_close(at_posterior.double(), mi, atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):                                                    # any other Q: below I
        q_logits = torch.randn(4, 3, generator=g, dtype=torch.float64)
        assert mutual_information_bound(q_logits[x], c) < mi
    assert mi < math.log(3)


def test_infogan_code_finds_the_two_families_without_labels(two_families):
    """Unlabelled 8x8 images, half bright on top, half bright below: after a short run each code draws
    one family, the two codes different ones, and Q reads the family of real images (labels unused)."""
    x, family = two_families
    torch.manual_seed(0)
    gan = build_infogan((1, 8, 8), codes=2, base=16, latent_dim=8)
    result = fit(gan, x, steps=200, batch_size=64, lr=2e-3, grad_clip=None, device="cpu", progress=False)
    gan.eval()
    samples = gan.sample(200, torch.arange(200) % 2)
    top_minus_bottom = samples[:, :, :4].mean(dim=(1, 2, 3)) - samples[:, :, 4:].mean(dim=(1, 2, 3))
    per_code = torch.stack([top_minus_bottom[0::2].mean(), top_minus_bottom[1::2].mean()])
    assert per_code.abs().min() > 0.5 and per_code[0] * per_code[1] < 0, per_code
    code_of_family = gan.infer_code(gan.preprocess(x))
    agreement = (code_of_family == family).float().mean().item()
    assert max(agreement, 1 - agreement) > 0.95
    assert result.history["mi_bound"][-1] > 0.9 * math.log(2)


def test_sample_draws_the_prior_or_the_given_codes():
    torch.manual_seed(0)
    gan = build_infogan((1, 8, 8), codes=4, base=4, latent_dim=8).eval()
    assert gan.sample(6).shape == (6, 1, 8, 8)
    torch.manual_seed(1)
    a = gan.sample(5, torch.zeros(5, dtype=torch.long))
    torch.manual_seed(1)
    b = gan.sample(5, torch.full((5,), 3))
    assert not torch.allclose(a, b)                                        # same z, other code
    gan.standing_statistics(n_batches=2, batch_size=8)


def test_bad_infogan_options_are_refused():
    G, D = DCGANGenerator((1, 8, 8), 8, 4, num_classes=1), DCGANDiscriminator((1, 8, 8), 4)
    with pytest.raises(ValueError, match="codes >= 2"):
        InfoGAN(G, D, 8, codes=1, feature_dim=D.out.in_features)
    with pytest.raises(TypeError, match="features"):
        InfoGAN(G, torch.nn.Linear(64, 1), 8, codes=2, feature_dim=64)
