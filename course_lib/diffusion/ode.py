"""Two ODE solvers for sampling, with a count of network evaluations (notebook 08).

The probability-flow ODE of a diffusion (``score``) and the velocity field of flow matching
(``flow_matching``) are both sampled by solving

    dx/dt = v(x, t)

from one time to another on a grid t_0, t_1, ..., t_K (increasing or decreasing). With step
h_k = t_{k+1} - t_k:

* Euler:  x_{k+1} = x_k + h_k v(x_k, t_k)                                  1 evaluation per step
* Heun:   x'      = x_k + h_k v(x_k, t_k)                  (an Euler guess)
          x_{k+1} = x_k + h_k / 2 [v(x_k, t_k) + v(x', t_{k+1})]          2 evaluations per step

Heun's method (the trapezoidal rule with an Euler predictor; Karras et al. 2022, "Elucidating the
design space of diffusion-based generative models", Algorithm 1) has error O(h^2) against Euler's
O(h), so at the same number of network evaluations (NFE) it usually wins on smooth fields.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ODEResult", "integrate", "METHODS"]

METHODS = ("euler", "heun")


@dataclass
class ODEResult:
    x: Tensor  # the state at the last time, like the start
    nfe: int  # network evaluations (calls of v)
    t: Tensor  # [S] the times of the kept states (float64, on the CPU)
    trajectory: Tensor | None  # [S, N, ...] the kept states on the CPU, or None if not asked for


def integrate(velocity: Callable[[Tensor, Tensor], Tensor], x: Tensor, times, *, method: str = "euler",
              return_trajectory: bool = False) -> ODEResult:
    """Solve dx/dt = velocity(x, t) along ``times`` with Euler or Heun steps.

    velocity(x [N, ...], t [N]) -> [N, ...], t a float tensor filled with the current time (one
    per example, so networks see the batch shape they expect). ``times``: K + 1 floats, a list or
    1-D tensor, strictly increasing or strictly decreasing. Returns an ``ODEResult`` (x at times[-1],
    the NFE: K for Euler, 2K for Heun, and every state if ``return_trajectory``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}.")
    times = torch.as_tensor(times, dtype=torch.float64).cpu()
    steps = times[1:] - times[:-1]
    if times.dim() != 1 or len(times) < 2 or not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError("times must be a 1-D grid of at least 2 strictly increasing (or decreasing) times, "
                         f"got {times.tolist() if times.numel() < 8 else tuple(times.shape)}.")
    nfe = 0

    def v(x_, t_):
        nonlocal nfe
        nfe += 1
        return velocity(x_, torch.full((x_.shape[0],), t_, device=x_.device, dtype=x_.dtype))

    kept = [x.detach().cpu()] if return_trajectory else None
    for k in range(len(times) - 1):
        t, t_next = times[k].item(), times[k + 1].item()
        h = t_next - t
        v_k = v(x, t)
        if method == "euler":
            x = x + h * v_k
        else:
            x_guess = x + h * v_k
            x = x + 0.5 * h * (v_k + v(x_guess, t_next))
        if kept is not None:
            kept.append(x.detach().cpu())
    return ODEResult(x=x, nfe=nfe, t=times, trajectory=torch.stack(kept) if kept is not None else None)
