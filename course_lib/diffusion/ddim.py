"""Sampling with fewer steps (notebook 07): DDIM, its inversion, and naive step skipping.

DDIM (Song, Meng & Ermon 2021) keeps DDPM's marginals q(x_t | x_0) but uses a non-Markovian
forward process, whose reverse step from time t to an earlier time s (any s < t) is

    x0_pred = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)              "predicted x_0"
    x_s     = sqrt(alpha_bar_s) x0_pred + sqrt(1 - alpha_bar_s - sigma^2) eps + sigma z
                                           "direction pointing to x_t"        "random noise"
    sigma   = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)

with eps = eps_theta(x_t, t) and z ~ N(0, I). eta = 0 is deterministic (DDIM); eta = 1 makes sigma^2
the variance of DDPM's posterior q(x_s | x_t, x_0) on the sub-sequence (with s = t - 1 it is
beta_tilde_t), so eta = 1 on all T steps is DDPM with sigma_t^2 = beta_tilde_t.

Naive skipping (the Crete lecture's "reduce the time steps ... every k-th step in inference")
keeps DDPM's one-step update x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)
+ sqrt(beta_t) z and simply applies it at t = T, T - k, ...: each jump removes one step's worth
of noise, so the chain ends far from the data.

Guidance composes with every sampler through ``eps_fn(x_t, t) -> eps`` (see ``guidance``); by
default eps_fn is the network, ``diffusion.model(x_t, t, y)``. Times follow ``GaussianDiffusion``:
lecture time t in 1..T, and alpha_bar_0 = 1 (time 0 is the data).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from course_lib.diffusion.gaussian_diffusion import GaussianDiffusion

__all__ = ["ddim_invert", "ddim_sample", "ddim_sigma", "ddim_step", "naive_skip_sample", "timesteps"]

EpsFn = Callable[[Tensor, Tensor], Tensor]


def timesteps(T: int, steps: int, spacing: str = "uniform") -> list[int]:
    """The sub-sequence tau_S > ... > tau_1 >= 1 of lecture times a sampler visits, then 0.

    "uniform": tau_i = round(i T / S) (T, ..., T / S; DDIM's "linear"); "quadratic": tau_i =
    round((i / S)^2 T), denser near the data (DDIM used it for CIFAR-10). Returns S + 1 ints,
    descending, ending with 0, e.g. timesteps(1000, 4) = [1000, 750, 500, 250, 0].
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1..T = 1..{T} (got {steps}).")
    if spacing not in ("uniform", "quadratic"):
        raise ValueError(f"unknown spacing {spacing!r}; choose 'uniform' or 'quadratic'.")
    frac = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    taus = (frac if spacing == "uniform" else frac ** 2) * T
    taus = taus.round().long().clamp(min=1).tolist()
    for i in range(1, steps):  # quadratic spacing rounds small times together: keep them distinct
        taus[i] = max(taus[i], taus[i - 1] + 1)
    if taus[-1] != T or len(set(taus)) != steps:
        raise ValueError(f"cannot place {steps} distinct steps in 1..{T} with {spacing} spacing; use fewer steps.")
    return taus[::-1] + [0]


def ddim_sigma(alpha_bar_t: Tensor, alpha_bar_s: Tensor, eta: float) -> Tensor:
    """sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s), s < t."""
    return eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)).clamp(min=0).sqrt()


def ddim_step(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor, alpha_bar_s: Tensor, eta: float = 0.0,
              z: Tensor | None = None, clip_x0: bool = False) -> tuple[Tensor, Tensor]:
    """One DDIM step from time t to s < t: returns (x_s, x0_pred), both shaped like x_t.

    alpha_bar_t, alpha_bar_s: 0-d tensors (or broadcastable against x_t). With eta > 0, z ~ N(0, I)
    like x_t must be given. ``clip_x0`` clamps x0_pred to [-1, 1] and recomputes eps from it (so
    the direction term stays consistent with the clipped guess), as image samplers do.
    """
    x0_pred = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        eps = (x_t - alpha_bar_t.sqrt() * x0_pred) / (1 - alpha_bar_t).sqrt()
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_s, eta)
    x_s = alpha_bar_s.sqrt() * x0_pred + (1 - alpha_bar_s - sigma ** 2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if z is None:
            raise ValueError("ddim_step with eta > 0 needs the noise z (a tensor like x_t).")
        x_s = x_s + sigma * z
    return x_s, x0_pred


def _eps_fn(diffusion: GaussianDiffusion, y: Tensor | None, eps_fn: EpsFn | None) -> EpsFn:
    if eps_fn is not None:
        if y is not None:
            raise ValueError("pass the labels to the guidance that builds eps_fn, not to the sampler as well.")
        return eps_fn
    return lambda x_t, t: diffusion.model(x_t, t, y)


def _labels(y: Tensor | int | None, n: int, device) -> Tensor | None:
    return torch.full((n,), y, device=device, dtype=torch.long) if isinstance(y, int) else y


@torch.no_grad()
def ddim_sample(diffusion: GaussianDiffusion, n: int, steps: int = 50, *, eta: float = 0.0,
                y: Tensor | int | None = None, eps_fn: EpsFn | None = None, x_T: Tensor | None = None,
                spacing: str = "uniform", clip_x0: bool = True, generator: torch.Generator | None = None,
                return_trajectory: bool = False):
    """Draw n samples with ``steps`` network calls: x_T ~ N(0, I), then ddim_step along ``timesteps``.

    y: labels [n] (or one int) for a class-conditional network; or give ``eps_fn`` (guidance).
    x_T: start from these [n, ...] instead of fresh noise (interpolation, inversion round trips).
    ``clip_x0`` clamps every guess of x_0, and the result, to [-1, 1] (images; off for other data).
    Returns x_0 [n, ...]; with ``return_trajectory`` also {"t": [S + 1], "x_t": [S + 1, n, ...],
    "x0_pred": [S + 1, n, ...]} (on the CPU; the last entry is x_0 itself).
    """
    device = diffusion.alpha_bars.device
    fn = _eps_fn(diffusion, _labels(y, n, device), eps_fn)
    taus = timesteps(diffusion.T, steps, spacing)
    x_t = (torch.randn((n, *diffusion.data_shape), generator=generator, device=device)
           if x_T is None else x_T.to(device))
    was_training = diffusion.training
    diffusion.eval()
    keep_t, keep_x, keep_x0 = [], [], []
    for t, s in zip(taus[:-1], taus[1:]):
        eps = fn(x_t, torch.full((n,), t, device=device, dtype=torch.long))
        z = torch.randn(x_t.shape, generator=generator, device=device) if eta > 0 and s > 0 else None
        x_s, x0_pred = ddim_step(x_t, eps, diffusion.alpha_bars[t], diffusion.alpha_bars[s],
                                 eta if s > 0 else 0.0, z, clip_x0)
        if return_trajectory:
            keep_t.append(t), keep_x.append(x_t.cpu()), keep_x0.append(x0_pred.cpu())
        x_t = x_s
    diffusion.train(was_training)
    x0 = x_t.clamp(-1.0, 1.0) if clip_x0 else x_t
    if not return_trajectory:
        return x0
    keep_t.append(0), keep_x.append(x0.cpu()), keep_x0.append(x0.cpu())
    return x0, {"t": torch.tensor(keep_t), "x_t": torch.stack(keep_x), "x0_pred": torch.stack(keep_x0)}


@torch.no_grad()
def ddim_invert(diffusion: GaussianDiffusion, x0: Tensor, steps: int = 50, *, y: Tensor | int | None = None,
                eps_fn: EpsFn | None = None, spacing: str = "uniform") -> Tensor:
    """Encode data into noise by running the deterministic DDIM step (eta = 0) forwards in time.

    From s to t > s: x_t = sqrt(alpha_bar_t) x0_pred + sqrt(1 - alpha_bar_t) eps, with
    eps = eps_theta(x_s, s) (at s = 0, the first step, eps_theta(x_0, tau_1)) and x0_pred from x_s. This is the
    DDIM ODE integrated the other way, so ``ddim_sample(..., x_T=ddim_invert(x0))`` returns close
    to x0 (exactly in the limit of many steps). x0: [n, ...]; returns x_T like x0.
    """
    n, device = x0.shape[0], diffusion.alpha_bars.device
    fn = _eps_fn(diffusion, _labels(y, n, device), eps_fn)
    taus = timesteps(diffusion.T, steps, spacing)[::-1]  # 0, tau_1, ..., T
    x = x0.to(device)
    was_training = diffusion.training
    diffusion.eval()
    for s, t in zip(taus[:-1], taus[1:]):
        time = torch.full((n,), max(s, taus[1]), device=device, dtype=torch.long)  # the network knows t >= 1
        eps = fn(x, time)
        x, _ = ddim_step(x, eps, diffusion.alpha_bars[s], diffusion.alpha_bars[t])
    diffusion.train(was_training)
    return x


@torch.no_grad()
def naive_skip_sample(diffusion: GaussianDiffusion, n: int, steps: int = 50, *, y: Tensor | int | None = None,
                      eps_fn: EpsFn | None = None, clip: bool = True,
                      generator: torch.Generator | None = None) -> Tensor:
    """DDPM's one-step update applied only at every k-th time (k = T / steps): the naive speed-up.

        x_next = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sqrt(beta_t) z

    at t = T, T - k, ..., k (no noise at the last step). Nothing in this update knows that the
    next time is t - k, so each jump removes about one step's worth of noise. Returns x_0 [n, ...]
    (clamped to [-1, 1] with ``clip``, images).
    """
    device = diffusion.alpha_bars.device
    fn = _eps_fn(diffusion, _labels(y, n, device), eps_fn)
    taus = timesteps(diffusion.T, steps)[:-1]
    x_t = torch.randn((n, *diffusion.data_shape), generator=generator, device=device)
    was_training = diffusion.training
    diffusion.eval()
    for i, t in enumerate(taus):
        eps = fn(x_t, torch.full((n,), t, device=device, dtype=torch.long))
        beta, alpha = diffusion.betas[t], diffusion.alphas[t]
        x_t = (x_t - beta / diffusion.sqrt_one_minus_alpha_bars[t] * eps) / alpha.sqrt()
        if i < len(taus) - 1:
            x_t = x_t + beta.sqrt() * torch.randn(x_t.shape, generator=generator, device=device)
    diffusion.train(was_training)
    return x_t.clamp(-1.0, 1.0) if clip else x_t
