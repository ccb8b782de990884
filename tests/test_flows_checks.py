"""The independent checks of notebook 05 (course_lib.flows.checks) pass on the right formulas and
fail on formulas with a deliberate error, so that a wrong derivation in the notebook cannot pass."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.flows import AffineCoupling, ConvNet, channel_mask
from course_lib.flows.checks import change_of_variables_histogram, log_det_against_autograd

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _exp_of_normal(n, gen):  # x = g(z) = exp(z), z ~ N(0, 1)
    return torch.randn(n, generator=gen, dtype=torch.float64).exp()


def _lognormal(x, jacobian_factor=True, sign=1.0):  # p_X(x) = N(f(x)) |f'(x)| with f = log, f' = 1/x
    return torch.exp(-0.5 * x.log() ** 2) / math.sqrt(2 * math.pi) * (x ** (-sign) if jacobian_factor else 1.0)


def test_change_of_variables_check_passes_the_formula_and_fails_its_mutants():
    result = change_of_variables_histogram(_exp_of_normal, _lognormal, n=200_000)
    assert result["max_abs_z"] < 5 and result["bins_used"] >= 50
    mutants = [lambda x: _lognormal(x, jacobian_factor=False),     # |f'(x)| forgotten
               lambda x: _lognormal(x, sign=-1.0),                  # multiplied by |g'(z)| instead of |f'(x)|
               lambda x: 1.01 * _lognormal(x)]                      # off by 1 %
    for wrong in mutants[:2]:
        with pytest.raises(AssertionError, match="disagrees with the histogram"):
            change_of_variables_histogram(_exp_of_normal, wrong, n=200_000)
    with pytest.raises(AssertionError, match="disagrees with the histogram"):  # 1 % needs more samples
        change_of_variables_histogram(_exp_of_normal, mutants[2], n=2_000_000, bins=20)


def test_log_det_check_passes_the_coupling_and_fails_its_mutants():
    layer = AffineCoupling(ConvNet(2, 8), channel_mask(2, 3, 3)).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0), dtype=p.dtype))
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert log_det_against_autograd(layer, x)["max_gap"] < 1e-10

    def with_log_det(fn):
        def forward(v):
            z, _ = layer(v)
            s, _ = layer._s_t(v * layer.mask)
            return z, fn(s)
        return forward

    for wrong in (lambda s: s.exp().flatten(1).sum(1),          # det = sum exp(s) instead of exp(sum s)
                  lambda s: 1.01 * s.flatten(1).sum(1),         # off by 1 %
                  lambda s: s.flatten(1).sum(1) / 2):           # a stray 1/2
        with pytest.raises(AssertionError, match="differs from autograd"):
            log_det_against_autograd(with_log_det(wrong), x)
