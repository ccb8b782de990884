"""RealNVP in two dimensions (notebook 05, section 4): trains in seconds on two moons or 8 Gaussians.

    flow = RealNVP2D(num_layers=8, hidden=64)
    result = fit(flow, points, steps=2000, batch_size=256, lr=2e-3)     # points: float32 [N, 2]
    log_p = flow.log_prob(grid)          # [M] nats, e.g. for a density heat map
    x = flow.sample(1000)                # [1000, 2]
    z, log_det = flow(x)                 # the data -> latent map (grid deformation pictures)

Layers alternate (ActNorm, AffineCoupling with mask [1, 0], ActNorm, AffineCoupling with mask [0, 1], ...):
each coupling changes the coordinate the previous one kept. Prior N(0, I).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.flows.layers import ActNorm, AffineCoupling, FlowSequence
from course_lib.flows.multiscale import standard_normal_log_prob

__all__ = ["MLP", "RealNVP2D"]


class MLP(nn.Sequential):
    """[N, D] -> [N, 2D] (s_raw, t): two hidden layers; the last layer starts at zero (identity coupling)."""

    def __init__(self, dim: int, hidden: int):
        out = nn.Linear(hidden, 2 * dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), out)


class RealNVP2D(GenerativeModel):
    """A stack of affine couplings with alternating masks on D-dimensional points (default D = 2)."""

    def __init__(self, dim: int = 2, num_layers: int = 8, hidden: int = 64, actnorm: bool = True,
                 scale_bound: float = 3.0):
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling needs at least 2 dimensions, got dim={dim}")
        self.dim = dim
        layers = []
        for i in range(num_layers):
            mask = (torch.arange(dim) % 2 == i % 2).float().view(1, dim)  # which coordinates are kept
            coupling = AffineCoupling(MLP(dim, hidden), mask, scale_bound)
            layers += [ActNorm(dim), coupling] if actnorm else [coupling]
        self.flow = FlowSequence(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, D] -> (z [N, D], log_det [N])."""
        return self.flow(x)

    def inverse(self, z: Tensor) -> Tensor:
        return self.flow.inverse(z)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = log N(f(x); 0, I) + log|det df/dx|, nats [N]."""
        z, log_det = self.flow(x)
        return standard_normal_log_prob(z) + log_det

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        z, log_det = self.flow(x)
        prior = standard_normal_log_prob(z)
        return {"loss": -(prior + log_det).mean(), "nll_prior": -prior.mean(), "neg_log_det": -log_det.mean()}

    @torch.no_grad()
    def data_init(self, x: Tensor, y: Tensor | None = None) -> None:
        self.flow.data_init(x)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        if y is not None:
            raise ValueError("RealNVP2D is unconditional: sample it without labels")
        device = next(self.parameters()).device
        return self.flow.inverse(temperature * torch.randn(n, self.dim, device=device))
