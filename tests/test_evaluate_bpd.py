"""bits_per_dim against hand computations and models whose likelihood is known exactly."""
import math

import pytest
import torch

from course_lib.evaluate import bits_per_dim


def test_hand_computation():
    # 2 examples of 4 values; NLL 10 and 20 nats. Discrete: nll / (4 ln 2).
    nll = torch.tensor([10.0, 20.0])
    x = torch.zeros(2, 1, 2, 2)
    assert torch.allclose(bits_per_dim(nll, x, nll_of="discrete"),
                          torch.tensor([10 / (4 * 0.6931471805599453), 20 / (4 * 0.6931471805599453)], dtype=torch.float64))
    # [0, 1] density: 10 nats + 4 * ln 256 = 10 + 22.18070977791825
    assert bits_per_dim(nll, x, nll_of="continuous_unit")[0].item() == pytest.approx((10 + 22.18070977791825) / 2.772588722239781)
    # [-1, 1] density: + 4 * ln 128 = 19.408121055678468; and a shape tuple instead of x
    assert bits_per_dim(nll, (1, 2, 2), nll_of="continuous_signed")[1].item() == pytest.approx(
        (20 + 19.408121055678468) / 2.772588722239781)


@pytest.mark.parametrize("nll_of, nll_per_dim", [
    ("discrete", math.log(256)),          # P(x) = 256^-D
    ("continuous_unit", 0.0),             # density 1 on [0, 1]^D
    ("continuous_signed", math.log(2)),   # density 2^-D on [-1, 1]^D
])
def test_uniform_model_is_exactly_8_bits(nll_of, nll_per_dim):
    x = torch.zeros(5, 3, 4, 4)
    nll = torch.full((5,), 48 * nll_per_dim)
    assert torch.allclose(bits_per_dim(nll, x, nll_of=nll_of), torch.full((5,), 8.0, dtype=torch.float64))


def _categorical_model(num_dims=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_dims, 256, generator=g) * 2  # independent pixels, each its own categorical
    return logits.log_softmax(-1), g


def test_independent_categorical_pixels_bpd_equals_entropy():
    log_p, g = _categorical_model()
    num_dims = log_p.shape[0]
    n = 20000
    x = torch.stack([torch.multinomial(log_p[d].exp(), n, replacement=True, generator=g) for d in range(num_dims)], 1)
    nll = -log_p[torch.arange(num_dims), x].sum(1)  # [N] exact NLL of the data under its own model
    bpd = bits_per_dim(nll, x.view(n, 1, 3, 4), nll_of="discrete")
    entropy_bits = -(log_p.exp() * log_p).sum() / math.log(2) / num_dims  # per-pixel entropy, exactly
    se = bpd.std() / math.sqrt(n)
    assert abs(bpd.mean() - entropy_bits) < 4 * se
    assert se < 0.02  # the check is tight enough to catch a missing or extra log term


def test_dequantized_density_matches_discrete_convention():
    # Piecewise-constant density on [0, 1] built from the categorical: p_Z(z) = 256 P(floor(256 z)).
    # Evaluated on uniformly dequantized data its continuous_unit bpd equals the discrete bpd exactly.
    log_p, g = _categorical_model(num_dims=6, seed=1)
    x = torch.stack([torch.multinomial(log_p[d].exp(), 100, replacement=True, generator=g) for d in range(6)], 1)
    z = (x + torch.rand(x.shape, generator=g)) / 256                      # dequantized, in [0, 1)
    nll_z = -(log_p[torch.arange(6), (z * 256).floor().long()] + math.log(256)).sum(1)
    nll_x = -log_p[torch.arange(6), x].sum(1)
    assert torch.allclose(bits_per_dim(nll_z, x, nll_of="continuous_unit"), bits_per_dim(nll_x, x, nll_of="discrete"))
    # the same density on [-1, 1]: u = 2z - 1 has p_U(u) = p_Z(z) / 2 per dimension
    nll_u = nll_z + 6 * math.log(2)
    assert torch.allclose(bits_per_dim(nll_u, x, nll_of="continuous_signed"), bits_per_dim(nll_x, x, nll_of="discrete"))


def test_bad_input():
    x = torch.zeros(3, 1, 2, 2)
    with pytest.raises(TypeError):
        bits_per_dim(torch.ones(3), x)  # the convention is a required keyword
    with pytest.raises(ValueError, match="continuous_unit"):
        bits_per_dim(torch.ones(3), x, nll_of="dequantized")
    with pytest.raises(ValueError, match="one NLL per example"):
        bits_per_dim(torch.ones(4), x, nll_of="discrete")
    with pytest.raises(ValueError, match="sum over the dimensions"):
        bits_per_dim(torch.ones(3, 4), (4,), nll_of="discrete")
    with pytest.raises(ValueError, match="NaN"):
        bits_per_dim(torch.tensor([1.0, float("nan"), 2.0]), x, nll_of="discrete")
