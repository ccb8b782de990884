"""2D toy distributions for watching a generative model learn a density you can see.

Each sampler returns ``x`` float32 [n, 2] and ``y`` int64 [n] (the mixture component the point
came from: which moon, which Gaussian, which black square; 0 for the swiss roll), scaled so each
coordinate has a standard deviation of roughly 1 (between about 0.7 and 1.3):

* ``moons``: two interleaved half circles (radius 1) with Gaussian noise 0.1, centred, divided by 0.7
* ``8gaussians``: 8 Gaussians (std 0.14) at angles k * 45 degrees on a circle of radius sqrt(2)
* ``swissroll``: (t cos t, t sin t) with t ~ U[1.5 pi, 4.5 pi], noise 0.25, divided by 7
* ``checkerboard``: uniform on the 8 black squares of a 4x4 board covering [-2, 2]^2

Sampling uses its own ``torch.Generator`` seeded with ``seed``, so the same (n, seed) always gives
the same points, whatever the global RNG state.
"""
from __future__ import annotations

import math

import torch

__all__ = ["TOY_SETS", "sample_toy"]


def _moons(n: int, g: torch.Generator):
    y = torch.randint(0, 2, (n,), generator=g)
    t = math.pi * torch.rand(n, generator=g)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)              # [n, 2]
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)    # [n, 2]
    x = torch.where(y[:, None] == 0, upper, lower) + 0.1 * torch.randn(n, 2, generator=g)
    return (x - torch.tensor([0.5, 0.25])) / 0.7, y


def _eight_gaussians(n: int, g: torch.Generator):
    y = torch.randint(0, 8, (n,), generator=g)
    angle = y.float() * (math.pi / 4)
    centres = math.sqrt(2) * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + 0.14 * torch.randn(n, 2, generator=g), y


def _swissroll(n: int, g: torch.Generator):
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + 0.25 * torch.randn(n, 2, generator=g)
    return x / 7.0, torch.zeros(n, dtype=torch.long)


def _checkerboard(n: int, g: torch.Generator):
    y = torch.randint(0, 8, (n,), generator=g)      # which black square
    row = y // 2                                    # 0..3
    col = 2 * (y % 2) + row % 2                     # black squares: (row + col) even
    corner = torch.stack([col, row], 1).float() - 2  # lower-left corner in [-2, 1]
    return corner + torch.rand(n, 2, generator=g), y


TOY_SETS = {"moons": _moons, "8gaussians": _eight_gaussians, "swissroll": _swissroll,
            "checkerboard": _checkerboard}


def sample_toy(name: str, n: int = 10_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of toy set ``name``: x float32 [n, 2], y int64 [n]."""
    if name not in TOY_SETS:
        raise ValueError(f"unknown toy set {name!r}; choose one of {sorted(TOY_SETS)}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)
    x, y = TOY_SETS[name](n, g)
    return x.float().contiguous(), y.long()
