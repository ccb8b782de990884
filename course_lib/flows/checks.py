"""Independent checks of notebook 05's derivations, written so that a test can run them on wrong formulas.

Each check takes the *formula under test* as a function and compares it with a computation that
does not use it; it raises ``AssertionError`` when they disagree and returns what it measured.
``tests/test_flows_checks.py`` runs each on a formula with a deliberate error and requires a failure.

* ``change_of_variables_histogram``: a density formula p_X against a histogram of samples pushed
  through x = g(z), bin by bin, as z-scores (the 1D change of variables, section 1).
* ``log_det_against_autograd``: a layer's analytic log_det against log|det| of its full Jacobian
  from ``torch.autograd.functional.jacobian`` (every layer, sections 2 and 3).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.functional import jacobian

__all__ = ["change_of_variables_histogram", "log_det_against_autograd"]


def change_of_variables_histogram(sample_x: Callable[[int, torch.Generator], torch.Tensor],
                                  density_x: Callable[[torch.Tensor], torch.Tensor],
                                  n: int = 1_000_000, bins: int = 60, lo: float | None = None,
                                  hi: float | None = None, max_z: float = 5.0, seed: int = 0) -> dict:
    """Compare ``density_x`` with the histogram of ``sample_x(n, generator)`` (float64 samples [n]).

    The expected count of bin [a, b] is n * integral of density_x over it (Simpson's rule, 20
    panels); a count is Binomial, so (count - expected) / sqrt(expected (1 - expected / n)) is a
    z-score. Asserts |z| < max_z in every bin with at least 20 expected samples (five sigma: chance
    alone almost never exceeds it; a missing |f'(x)| factor gives z in the hundreds).
    Returns the bin edges, counts, expected counts, z-scores and the largest |z|.
    """
    x = sample_x(n, torch.Generator().manual_seed(seed)).double()
    lo = x.quantile(0.001).item() if lo is None else lo
    hi = x.quantile(0.999).item() if hi is None else hi
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    counts = torch.histc(x, bins=bins, min=lo, max=hi)
    panels = 20  # Simpson's rule in each bin
    t = torch.linspace(0, 1, panels + 1, dtype=torch.float64)
    pts = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * t[None, :]  # [bins, panels + 1]
    w = torch.ones(panels + 1, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    integral = (density_x(pts.reshape(-1)).reshape(pts.shape).double() * w).sum(1) * (edges[1:] - edges[:-1]) / (3 * panels)
    expected = n * integral
    z = (counts - expected) / torch.sqrt(expected * (1 - expected / n)).clamp_min(1e-12)
    used = expected >= 20
    max_abs_z = z[used].abs().max().item()
    assert max_abs_z < max_z, (f"the density formula disagrees with the histogram of samples: max |z| = "
                               f"{max_abs_z:.1f} over {int(used.sum())} bins (chance alone stays below {max_z})")
    return {"edges": edges, "counts": counts, "expected": expected, "z": z, "max_abs_z": max_abs_z,
            "bins_used": int(used.sum()), "total_mass": integral.sum().item()}


def log_det_against_autograd(forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                             x: torch.Tensor, atol: float = 1e-6) -> dict:
    """Compare ``forward(x) -> (z, log_det [N])`` with log|det dz/dx| of each example from autograd.

    ``x`` [N, ...] (use float64); the Jacobian of one example is [D, D] with D = x[0].numel(), so keep
    D small (at most a few hundred). Returns the analytic and the autograd log-dets and the largest gap.
    """
    _, log_det = forward(x)
    if log_det.shape != (x.shape[0],):
        raise AssertionError(f"log_det must have shape [N] = [{x.shape[0]}], got {tuple(log_det.shape)}")
    ref = []
    for xi in x:
        def f(v, shape=xi.shape):
            return forward(v.view(1, *shape))[0].reshape(-1)

        sign, logabsdet = torch.linalg.slogdet(jacobian(f, xi.reshape(-1), vectorize=True))
        assert sign != 0, "the Jacobian is singular: the map is not invertible here"
        ref.append(logabsdet)
    ref = torch.stack(ref)
    gap = (log_det.detach() - ref).abs().max().item()
    tol = atol * max(1.0, ref.abs().max().item())
    assert gap <= tol, f"analytic log_det differs from autograd's log|det J| by {gap:.3g} (tolerance {tol:.1g})"
    return {"analytic": log_det.detach(), "autograd": ref, "max_gap": gap, "dims": x[0].numel()}
