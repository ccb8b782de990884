"""Independent checks of the GAN lecture's results, as functions of the formula under test (notebook 04).

Each check computes its answer without the formula it is handed, so it fails when that formula is
wrong (``tests/test_gan_checks.py`` runs them on copies with a 1% error and requires a failure):

* ``optimal_discriminator_error(d_star)``: the discriminator that maximises the value function on a
  finite space, found by numerical optimisation (L-BFGS over one free logit per point), against the
  claimed D*(p_data, p_g).
* ``game_value_error(value)``: V(D, G) evaluated at that optimised discriminator, against the claimed
  value of the game as a function of (p_data, p_g).
* ``generator_gradient_error(grad, loss)``: the claimed d loss / d logit against autograd.

Expectations are exact sums over the finite space (no sampling noise), in float64.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_densities", "optimal_logits", "optimal_discriminator_error", "game_value_error",
           "generator_gradient_error"]


def random_densities(n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two random probability vectors p_data, p_g on n points (float64, entries >= 0.02 / n)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(2, n, generator=g, dtype=torch.float64) + 0.02
    p = p / p.sum(dim=1, keepdim=True)
    return p[0], p[1]


def optimal_logits(p_data: Tensor, p_g: Tensor) -> Tensor:
    """argmax over logits l of V = sum_x p_data log sigmoid(l) + p_g log(1 - sigmoid(l)), by L-BFGS."""
    logits = torch.zeros_like(p_data, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(p_data * F.logsigmoid(logits) + p_g * F.logsigmoid(-logits)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return logits.detach()


def optimal_discriminator_error(d_star: Callable[[Tensor, Tensor], Tensor], seeds=range(3)) -> float:
    """max |sigmoid(optimised logits) - d_star(p_data, p_g)| over a few random pairs of densities."""
    errors = []
    for seed in seeds:
        p_data, p_g = random_densities(seed=seed)
        errors.append((torch.sigmoid(optimal_logits(p_data, p_g)) - d_star(p_data, p_g)).abs().max())
    return float(torch.stack(errors).max())


def game_value_error(value: Callable[[Tensor, Tensor], Tensor], seeds=range(3)) -> float:
    """max |V(D_opt, G) - value(p_data, p_g)|, D_opt found by optimisation (not by the D* formula)."""
    errors = []
    for seed in seeds:
        p_data, p_g = random_densities(seed=seed)
        logits = optimal_logits(p_data, p_g)
        v_opt = (p_data * F.logsigmoid(logits) + p_g * F.logsigmoid(-logits)).sum()
        errors.append((v_opt - torch.as_tensor(value(p_data, p_g), dtype=torch.float64)).abs())
    return float(torch.stack(errors).max())


def generator_gradient_error(grad: Callable[[Tensor], Tensor], loss: Callable[[Tensor], Tensor]) -> float:
    """max |grad(l) - d loss(l)_i / d l_i| over logits l from -20 to 20 (autograd; ``loss`` is per example)."""
    logits = torch.linspace(-20, 20, 81, dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(loss(logits).sum(), logits)
    return float((grad(logits.detach()) - auto).abs().max())
