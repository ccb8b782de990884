"""The masks and the whole networks are autoregressive; the naive net has a blind spot, the gated net none.

Every check differentiates the WHOLE network (``course_lib.autoregressive.checks.dependence``):
output value t must not depend on input value s >= t in raster order (channels R, G, B innermost).
"""
from __future__ import annotations

import pytest
import torch

from course_lib.autoregressive import (
    GatedPixelCNN,
    MaskedConv2d,
    PixelCNN,
    PixelCNNConfig,
    horizontal_mask,
    raster_mask,
    vertical_mask,
)
from course_lib.autoregressive.checks import causality_violations, dependence, raster_index, receptive_field

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NETS = {"naive": PixelCNN, "gated": GatedPixelCNN}


def _net(kind: str, C: int, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {"in_channels": C, "levels": 4, "hidden": 6 if C == 3 else 4, "layers": 3, "first_kernel": 3, "kernel": 3}
    return NETS[kind](PixelCNNConfig(**{**cfg, **options})).eval()


def test_lecture_mask_grids():
    # the 5x5 type-A grid of the Bonn lecture; type B differs only at the centre
    a = raster_mask(5, "A", 1, 1)[0, 0]
    expected = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert torch.equal(a, expected.float())
    b = raster_mask(5, "B", 1, 1)[0, 0]
    assert torch.equal(b - a, torch.zeros(5, 5).index_put_((torch.tensor(2), torch.tensor(2)), torch.tensor(1.0)))
    # colour groups at the centre: type A, R sees nothing, G sees R, B sees R and G; type B adds the diagonal
    centre_a = raster_mask(3, "A", 3, 3, colour_groups=3)[:, :, 1, 1]
    assert torch.equal(centre_a, torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]]).float())
    centre_b = raster_mask(3, "B", 6, 6, colour_groups=3)[:, :, 1, 1]
    assert torch.equal(centre_b, torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).float().repeat_interleave(2, 0)
                       .repeat_interleave(2, 1))
    assert vertical_mask(3, "A", 1, 1)[0, 0].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert horizontal_mask(3, "A", 1, 1)[0, 0].tolist() == [[1, 0]]


def test_bad_masks_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="odd"):
        raster_mask(4, "A", 1, 1)
    with pytest.raises(ValueError, match="'A'"):
        raster_mask(3, "C", 1, 1)
    with pytest.raises(ValueError, match="multiple of 3"):
        raster_mask(3, "B", 4, 4, colour_groups=3)
    with pytest.raises(ValueError, match="multiple of in_channels"):
        GatedPixelCNN(PixelCNNConfig(in_channels=3, hidden=8))


@pytest.mark.parametrize("mixtures", [None, 2])
@pytest.mark.parametrize("kind", ["naive", "gated"])
@pytest.mark.parametrize("C", [1, 3])
def test_whole_network_is_causal(kind, C, mixtures):
    shape = (C, 5, 5)
    dep = dependence(_net(kind, C, dilations=(1, 2), mixtures=mixtures), shape)
    assert causality_violations(dep).numel() == 0, causality_violations(dep)[:5]
    # ... and not trivially: each value sees its left neighbour and the pixel above
    for c in range(C):
        t = raster_index(c, 2, 2, shape)
        assert dep[t, raster_index(c, 2, 1, shape)] and dep[t, raster_index(c, 1, 2, shape)]


@pytest.mark.parametrize("kind", ["naive", "gated"])
def test_colour_order_r_g_b_within_a_pixel(kind):
    shape = (3, 4, 4)
    dep = dependence(_net(kind, 3), shape)
    r, g, b = (raster_index(c, 2, 1, shape) for c in range(3))
    assert dep[g, r] and dep[b, r] and dep[b, g]                 # G sees R; B sees R and G
    assert not dep[r, g] and not dep[r, b] and not dep[g, b]     # never the other way round
    assert not dep[r, r] and not dep[g, g] and not dep[b, b]     # nor itself (type A)


def test_the_check_catches_a_one_pixel_leak():
    net = _net("naive", 1)
    net.first.mask.copy_(raster_mask(3, "B", 1, net.cfg.hidden))  # type B on the image: x_t leaks into f_t
    dep = dependence(net, (1, 4, 4))
    leaks = causality_violations(dep)
    assert len(leaks) > 0 and all(t == s for t, s in leaks.tolist())  # exactly the diagonal leaks


def test_masked_weights_get_no_gradient():
    conv = MaskedConv2d(raster_mask(3, "A", 2, 2))
    conv(torch.randn(1, 2, 5, 5)).sum().backward()
    assert (conv.weight.grad[conv.mask == 0] == 0).all() and (conv.weight.grad[conv.mask == 1] != 0).any()


def test_blind_spot_in_the_naive_net_not_in_the_gated_net():
    # 3x3 kernels, 5 layers: a path of 5 offsets reaches 5 rows up, yet (i-1, j+2) is never reached
    shape, (i, j) = (1, 8, 8), (6, 3)
    naive = receptive_field(dependence(_net("naive", 1, layers=4), shape), 0, i, j, shape)
    gated = receptive_field(dependence(_net("gated", 1, layers=4), shape), 0, i, j, shape)
    assert naive[i - 3, j + 3] and naive[i - 1, j + 1]          # far up-right is seen ...
    assert not naive[i - 1, j + 2] and not naive[i - 2, j + 3]  # ... the blind spot between is not
    # the gated net sees every pixel of the rows above within +-2 columns, and the row to the left
    assert gated[i - 2:i, j - 2:j + 3].all() and gated[i, :j].all()
    assert not gated[i, j:].any() and not gated[i + 1:].any()
