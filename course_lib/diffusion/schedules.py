"""Noise schedules beta_1..beta_T of the forward process

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I).

Time indexing (the same everywhere in ``course_lib.diffusion``): a schedule is a float64
tensor of length T + 1 whose entry t is lecture time t. Entry 0 stands for the clean data,
so ``betas[0] = 0`` and ``alpha_bars[0] = 1``; the lecture's beta_1 is ``betas[1]`` and
beta_T is ``betas[T]``.

Notebook 06, section "Noise schedules".
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["linear_beta_schedule", "cosine_beta_schedule", "alpha_bars_from_betas", "snr", "make_betas",
           "plot_schedules"]


def linear_beta_schedule(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """beta_t rising linearly from beta_1 to beta_T (Ho et al. 2020). Returns [T + 1], betas[0] = 0."""
    if T < 1:
        raise ValueError(f"T must be at least 1 (got {T}).")
    if not 0.0 < beta_1 <= beta_T < 1.0:
        raise ValueError(f"need 0 < beta_1 <= beta_T < 1 (got beta_1={beta_1}, beta_T={beta_T}).")
    betas = torch.linspace(beta_1, beta_T, T, dtype=torch.float64)  # (T,) for t = 1..T
    return torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # (T + 1,)


def cosine_beta_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021), "Improved DDPM", eq. 17.

        alpha_bar(t) = f(t) / f(0),   f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 )
        beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at ``max_beta``

    alpha_bar falls slowly at both ends, so less of the chain is spent on almost-pure noise
    than with the linear schedule. The offset s keeps beta_1 from being tiny.
    Returns [T + 1] float64, betas[0] = 0.
    """
    if T < 1:
        raise ValueError(f"T must be at least 1 (got {T}).")
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bars = f / f[0]  # (T + 1,), alpha_bars[0] = 1
    betas = (1 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=max_beta)  # (T,)
    return torch.cat([torch.zeros(1, dtype=torch.float64), betas])


def alpha_bars_from_betas(betas: Tensor) -> Tensor:
    """alpha_bar_t = prod_{s=1..t} (1 - beta_s); with betas[0] = 0 this gives alpha_bars[0] = 1."""
    return torch.cumprod(1.0 - betas, dim=0)


def snr(alpha_bars: Tensor) -> Tensor:
    """Signal-to-noise ratio of q(x_t | x_0): SNR(t) = alpha_bar_t / (1 - alpha_bar_t) (inf at t = 0)."""
    return alpha_bars / (1.0 - alpha_bars)


def make_betas(schedule: str, T: int) -> Tensor:
    """The schedule called ``schedule`` ("linear" or "cosine") with T steps, as [T + 1] float64."""
    if schedule == "linear":
        return linear_beta_schedule(T)
    if schedule == "cosine":
        return cosine_beta_schedule(T)
    raise ValueError(f"unknown schedule {schedule!r}; choose 'linear' or 'cosine'.")


def plot_schedules(T: int = 1000, schedules: tuple[str, ...] = ("linear", "cosine")):
    """Plot alpha_bar_t and log SNR(t) against t for the named schedules; returns the figure."""
    import matplotlib.pyplot as plt

    fig, (ax_ab, ax_snr) = plt.subplots(1, 2, figsize=(10, 3.5))
    t = torch.arange(1, T + 1)
    for name in schedules:
        alpha_bars = alpha_bars_from_betas(make_betas(name, T))[1:]
        ax_ab.plot(t, alpha_bars, label=name)
        ax_snr.plot(t, torch.log(snr(alpha_bars)), label=name)
    ax_ab.set(xlabel="t", ylabel=r"$\bar\alpha_t$", title=r"$\bar\alpha_t$ (signal kept in $x_t$)")
    ax_snr.set(xlabel="t", ylabel=r"$\log \mathrm{SNR}(t)$",
               title=r"$\log\, \bar\alpha_t / (1 - \bar\alpha_t)$")
    for ax in (ax_ab, ax_snr):
        ax.legend()
    fig.tight_layout()
    return fig
