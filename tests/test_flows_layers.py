"""Every flow layer's analytic log_det against autograd (jacobian + slogdet), every inverse by round
trip, composition (log-dets add), and the identity-on-half problem of unpermuted couplings."""
from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from course_lib.flows import (
    ActNorm,
    AffineCoupling,
    ConvNet,
    FlowSequence,
    Invertible1x1Conv,
    LogitTransform,
    MultiScaleFlow,
    RealNVP2D,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)
from course_lib.flows.toy2d import MLP

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move every parameter away from its (identity) initialisation, so that s, t, W are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _autograd_log_det(layer, x: torch.Tensor) -> torch.Tensor:
    """log|det dz/dx| of each example, from the full Jacobian of the flattened map (float64)."""
    out = []
    for xi in x:
        def f(v, shape=xi.shape):
            return layer(v.view(1, *shape))[0].reshape(-1)

        jac = jacobian(f, xi.reshape(-1))
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0, "the Jacobian is singular"
        out.append(logabsdet)
    return torch.stack(out)


def _check(layer, x, atol=1e-8):
    layer = layer.double()
    z, log_det = layer(x)
    assert log_det.shape == (x.shape[0],), f"log_det must be [N], got {tuple(log_det.shape)}"
    torch.testing.assert_close(log_det, _autograd_log_det(layer, x), atol=atol, rtol=1e-7)
    torch.testing.assert_close(layer.inverse(z), x, atol=1e-9, rtol=1e-9)  # round trip
    return z


def _images(n=3, c=2, h=4, w=4, seed=1):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("parity", [0, 1])
def test_affine_coupling_checkerboard(parity):
    layer = _randomise(AffineCoupling(ConvNet(2, 8), checkerboard_mask(2, 4, 4, parity), scale_bound=2.0))
    z = _check(layer, _images())
    x = _images()
    kept = checkerboard_mask(2, 4, 4, parity).double().bool().expand_as(x)
    assert torch.equal(z[kept], x[kept]) and not torch.allclose(z[~kept], x[~kept])


@pytest.mark.parametrize("parity", [0, 1])
def test_affine_coupling_channel_mask(parity):
    layer = _randomise(AffineCoupling(ConvNet(4, 8), channel_mask(4, 4, 4, parity)))
    _check(layer, _images(c=4))


def test_affine_coupling_on_vectors_and_the_scale_bound():
    layer = _randomise(AffineCoupling(MLP(2, 16), torch.tensor([[1.0, 0.0]]), scale_bound=0.5), scale=3.0)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _check(layer.double(), x)
    s, _ = layer._s_t(x * layer.mask)
    s_raw = layer.net(x * layer.mask)[:, :2] * (1 - layer.mask)
    assert s_raw.abs().max() > 2 and s.abs().max() <= 0.5  # large raw scales are squashed to the bound


def test_actnorm_after_data_init_normalises_and_has_the_right_log_det():
    x = 3.0 + 2.0 * _images(n=64, c=3)
    layer = ActNorm(3).double()
    assert not layer.initialized
    layer.data_init(x)
    z, _ = layer(x)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3)), torch.ones(3, dtype=torch.float64))
    assert bool(layer.initialized) and layer.log_scale.abs().min() > 0.3
    _check(layer, x[:3])
    _check(ActNorm(2).double().requires_grad_(False), torch.randn(4, 2, dtype=torch.float64))  # vectors


def test_invertible_1x1_conv_lu_log_det_and_inverse():
    layer = _randomise(Invertible1x1Conv(4, torch.Generator().manual_seed(3)), scale=0.2)
    _check(layer, _images(c=4))
    w = layer.double().weight()
    torch.testing.assert_close(torch.linalg.slogdet(w)[1], layer.log_s.sum())  # log|det W| = sum(log_s)
    z, _ = layer(_images(c=4))
    conv = torch.nn.functional.conv2d(_images(c=4), w.view(4, 4, 1, 1))
    torch.testing.assert_close(z, conv)  # it is a 1x1 convolution


def test_squeeze_is_a_permutation_and_refuses_odd_sizes():
    x = _images(c=1, h=4, w=6)
    z = _check(Squeeze(), x)
    assert z.shape == (3, 4, 2, 3) and torch.equal(z.flatten().sort()[0], x.flatten().sort()[0])
    assert torch.equal(z[0, :, 0, 0], x[0, 0, :2, :2].flatten())  # a 2x2 block becomes 4 channels
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze()(torch.zeros(1, 1, 5, 4))


def test_logit_transform_log_det_and_inverse():
    y = torch.rand(3, 1, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _check(LogitTransform(alpha=0.05), y)
    _check(LogitTransform(alpha=0.0), y)


def test_composition_log_dets_add_and_match_the_composite_jacobian():
    layers = [ActNorm(4), Invertible1x1Conv(4, torch.Generator().manual_seed(5)),
              AffineCoupling(ConvNet(4, 8), channel_mask(4, 2, 2)), ActNorm(4),
              AffineCoupling(ConvNet(4, 8), checkerboard_mask(4, 2, 2, 1))]
    stack = _randomise(FlowSequence(*layers)).double()
    x = _images(c=4, h=2, w=2)
    z, log_det = stack(x)
    h, parts = x, []
    for layer in layers:
        h, ld = layer(h)
        parts.append(ld)
    torch.testing.assert_close(log_det, torch.stack(parts).sum(0))  # the sum of the layers' log-dets
    torch.testing.assert_close(z, h)
    _check(stack, x)  # and the sum is the log-det of the composite map


def test_unpermuted_couplings_leave_the_kept_half_unchanged():
    x = _images(n=8, c=4)
    same_mask = _randomise(FlowSequence(*[AffineCoupling(ConvNet(4, 8), channel_mask(4, 4, 4, 0))
                                          for _ in range(6)])).double()
    z, _ = same_mask(x)
    assert torch.equal(z[:, :2], x[:, :2])  # six couplings, the first half never changed
    alternating = _randomise(FlowSequence(*[AffineCoupling(ConvNet(4, 8), channel_mask(4, 4, 4, i % 2))
                                            for i in range(6)])).double()
    with_1x1 = _randomise(FlowSequence(*[m for _ in range(6) for m in (
        Invertible1x1Conv(4), AffineCoupling(ConvNet(4, 8), channel_mask(4, 4, 4, 0)))])).double()
    for stack in (alternating, with_1x1):
        z, _ = stack(x)
        assert (z[:, :2] - x[:, :2]).abs().min() > 0  # every coordinate changes


def test_multiscale_flow_and_realnvp2d_log_det_and_round_trip():
    flow = _randomise(MultiScaleFlow((1, 8, 8), hidden=(4, 4, 4), steps=(2, 1, 1)), scale=0.05).double()
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    flow.data_init(y)

    class Flat(torch.nn.Module):  # the multi-scale map as one tensor -> tensor map for the Jacobian
        def forward(self, v):
            zs, log_det = flow(v)
            return torch.cat([z.flatten(1) for z in zs], 1), log_det

    zs, log_det = flow(y)
    assert [z.shape[1:] for z in zs] == [torch.Size(s) for s in flow.latent_shapes]
    torch.testing.assert_close(log_det, _autograd_log_det(Flat(), y), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(flow.inverse(zs), y, atol=1e-9, rtol=1e-7)

    toy = _randomise(RealNVP2D(num_layers=4, hidden=8)).double()
    _check(toy, torch.randn(4, 2, dtype=torch.float64))
