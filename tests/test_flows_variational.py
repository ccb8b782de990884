"""Variational dequantisation: log q(u | x) against an autograd Jacobian, the bin it fills, and the
flow's bound with it (course_lib.flows.variational, FlowModel(dequantization="variational"))."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.flows import FlowModel, VariationalDequantizer


def _randomised(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Every parameter redrawn, so the couplings are not the identity they start as."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn_like(p))
    return module


def test_log_q_matches_the_density_of_u_from_an_autograd_jacobian():
    shape = (2, 2, 3)  # C, H, W: 12 dimensions
    deq = _randomised(VariationalDequantizer(shape, hidden=4, couplings=3)).double()
    x = torch.randint(0, 256, (3, *shape)).double()
    eps = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    u, log_q = deq.transform(eps, x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda e: deq.transform(e.view(1, *shape), x[i:i + 1])[0].flatten(),
                                                 eps[i].flatten())
        # density of u = T(eps): log N(eps) - log|det dT/deps|
        expected = -0.5 * (eps[i] ** 2).sum() - 0.5 * eps[i].numel() * math.log(2 * math.pi) - torch.linalg.slogdet(jac)[1]
        assert log_q[i].item() == pytest.approx(expected.item(), abs=1e-9)
    assert u.shape == x.shape and bool(((u > 0) & (u < 1)).all())


def test_q_depends_on_the_pixels_and_fills_each_bin():
    deq = _randomised(VariationalDequantizer((1, 4, 4), hidden=4, couplings=2))
    eps = torch.randn(2, 1, 4, 4)
    x = torch.randint(0, 256, (2, 1, 4, 4))
    u_a, _ = deq.transform(eps, x)
    u_b, _ = deq.transform(eps, 255 - x)
    assert not torch.allclose(u_a, u_b)  # the same noise lands elsewhere for other pixels
    y = (x + u_a) / 256
    assert torch.equal((y * 256).floor(), x.float())  # every y stays in its pixel's bin


def test_variational_flow_trains_its_bound_and_reports_its_parts():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    model = FlowModel((1, 8, 8), dequantization="variational", dequantizer_hidden=4, hidden=(8, 8, 8), steps=(1, 1, 1))
    y = model.preprocess(x)
    model.data_init(y)
    terms = model.loss(y)
    assert set(terms) == {"loss", "prior_bpd", "log_det_bpd", "log_q_bpd"}
    # the loss is the sum of its parts (log q enters with a plus: a better q lowers it)
    assert terms["loss"].item() == pytest.approx((terms["prior_bpd"] + terms["log_det_bpd"] + terms["log_q_bpd"]).item(), rel=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = model.loss(model.preprocess(x))["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    bpd = model.bits_per_dim(x, draws=4).mean().item()
    assert math.isfinite(bpd) and bpd < first  # q and the flow learn together; bits_per_dim uses q
    assert model.dequantizer.context[0].weight.grad is not None


def test_unknown_dequantization_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'uniform' or 'variational'"):
        FlowModel((1, 8, 8), dequantization="gaussian")
