"""Variational Diffusion Models (Kingma, Salimans, Poole & Ho 2021, "Variational diffusion models"),
notebook 08, section 2.

Continuous time t in [0, 1], variance preserving, the schedule given by gamma(t) = -log SNR(t):

    z_t = alpha_t x + sigma_t eps,   alpha_t^2 = sigmoid(-gamma(t)),   sigma_t^2 = sigmoid(gamma(t)),
    SNR(t) = alpha_t^2 / sigma_t^2 = exp(-gamma(t)),   gamma increasing from gamma(0) to gamma(1).

(DDPM in this notation: alpha_t^2 is alpha_bar_t and SNR is ``schedules.snr``.) The bound on the
negative log-likelihood of 8-bit data x (pixel values k / 127.5 - 1), in nats per example (VDM eq. 11):

    prior           KL(q(z_1 | x) || N(0, I))
    reconstruction  E_q(z_0|x) [-log p(x | z_0)],  p(x_i | z_0) proportional to
                    exp(-(z_0,i / alpha_0 - x_i)^2 / (2 exp(gamma_0))) over the 256 pixel values
    diffusion       L_inf = -1/2 E_{t ~ U(0, 1), eps} [ SNR'(t) || x - x_hat(z_t; t) ||^2 ]

Derivation of L_inf (VDM section 4). With T steps and s = t - 1/T, the diffusion loss is
L_T = T / 2 E_{t, eps}[(SNR(s) - SNR(t)) ||x - x_hat(z_t; t)||^2] (VDM eq. 13); as T -> inf,
T (SNR(t - 1/T) - SNR(t)) -> -SNR'(t), which gives L_inf. With SNR = exp(-gamma), -SNR'(t) =
gamma'(t) exp(-gamma(t)), so

    L_inf = 1/2 E[ gamma'(t) exp(-gamma(t)) ||x - x_hat||^2 ]                          (x-form)
          = 1/2 E[ gamma'(t) ||eps - eps_hat(z_t; t)||^2 ]                              (eps-form)

because x_hat = (z_t - sigma_t eps_hat) / alpha_t makes x - x_hat = (sigma_t / alpha_t)(eps_hat - eps)
and sigma_t^2 / alpha_t^2 = exp(gamma). Substituting v = SNR(t) (VDM eq. 18-19):

    L_inf = 1/2 int_{SNR(1)}^{SNR(0)} E || x - x_tilde(z_v, v) ||^2 dv,   z_v = alpha_v x + sigma_v eps, alpha_v^2 = v / (1 + v)

so when the denoiser depends on t only through the SNR, x_hat(z, t) = x_tilde(z, SNR(t)), the loss
depends on the schedule only through its end points. The schedule's shape then only changes the
*variance* of the Monte Carlo estimate over t, which VDM minimises (section 5.2). Here the network
is always conditioned on gamma_t (``VDM.eps_hat``), so the invariance holds for it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.nn import sum_flat

__all__ = ["LinearGamma", "MonotoneGamma", "gamma_and_derivative", "alpha_sigma", "low_discrepancy_times",
           "diffusion_loss", "diffusion_loss_quadrature", "prior_kl", "reconstruction_nll", "FourierFeatures",
           "VDM", "build_vdm"]

PREDICTIONS = ("eps", "x")


class LinearGamma(nn.Module):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t: log SNR falls linearly from -gamma_min to -gamma_max.

    Defaults -13.3 and 5.0, the end points VDM starts from (SNR from 6e5 down to 7e-3). [N] -> [N].
    """

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        if not gamma_min < gamma_max:
            raise ValueError(f"need gamma_min < gamma_max (got {gamma_min}, {gamma_max}).")
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    def forward(self, t: Tensor) -> Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t


class MonotoneGamma(nn.Module):
    """A learned monotone schedule with fixed end points (VDM appendix, "monotonic neural network"):

        g(t) = l1(t) + l3(sigmoid(l2(l1(t)))),    l1: 1 -> 1, l2: 1 -> hidden, l3: hidden -> 1,
        gamma(t) = gamma_min + (gamma_max - gamma_min) (g(t) - g(0)) / (g(1) - g(0)).

    Every weight is softplus of a parameter, so positive, and g is increasing; the rescaling pins
    gamma(0) = gamma_min and gamma(1) = gamma_max (VDM learns these two as well; here they stay
    fixed, so L_inf cannot change and training the schedule only reduces the loss's variance).
    Initialised close to ``LinearGamma``. [N] -> [N].
    """

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, hidden: int = 1024):
        super().__init__()
        if not gamma_min < gamma_max:
            raise ValueError(f"need gamma_min < gamma_max (got {gamma_min}, {gamma_max}).")
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.w1, self.b1 = nn.Parameter(torch.tensor(0.5413)), nn.Parameter(torch.zeros(()))  # softplus(0.5413) = 1
        self.w2, self.b2 = nn.Parameter(torch.randn(hidden)), nn.Parameter(torch.randn(hidden))
        self.w3 = nn.Parameter(torch.full((hidden,), -8.0))  # softplus(-8) = 3e-4: l3 starts almost flat

    def g(self, t: Tensor) -> Tensor:
        """The unnormalised increasing network g(t): [N] -> [N]."""
        h = F.softplus(self.w1) * t + self.b1  # (N,)
        return h + torch.sigmoid(h[:, None] * F.softplus(self.w2) + self.b2) @ F.softplus(self.w3)

    def forward(self, t: Tensor) -> Tensor:
        ends = self.g(torch.tensor([0.0, 1.0], device=t.device, dtype=t.dtype))
        return self.gamma_min + (self.gamma_max - self.gamma_min) * (self.g(t) - ends[0]) / (ends[1] - ends[0])


def gamma_and_derivative(gamma: nn.Module, t: Tensor) -> tuple[Tensor, Tensor]:
    """gamma(t) and gamma'(t) by autograd, [N] each; differentiable further when grad mode is on (training)."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        t = t.detach().requires_grad_(True)
        g = gamma(t)
        (dg,) = torch.autograd.grad(g.sum(), t, create_graph=create_graph)
    return (g, dg) if create_graph else (g.detach(), dg.detach())


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """alpha = sqrt(sigmoid(-gamma)), sigma = sqrt(sigmoid(gamma)) (so alpha^2 + sigma^2 = 1)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def low_discrepancy_times(n: int, device=None, generator: torch.Generator | None = None) -> Tensor:
    """t_i = (u + i / n) mod 1, i = 0..n-1, one u ~ U[0, 1): each t_i ~ U[0, 1), spread evenly (VDM section 5.1). [n]."""
    u = torch.rand((), generator=generator, device=device)
    return torch.remainder(u + torch.arange(n, device=device) / n, 1.0)


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _integrand(x: Tensor, g: Tensor, dg: Tensor, denoise, eps: Tensor, prediction: str) -> Tensor:
    """1/2 gamma' ||eps - eps_hat||^2 or 1/2 gamma' exp(-gamma) ||x - x_hat||^2 at z_t = alpha x + sigma eps: [N]."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}.")
    alpha, sigma = alpha_sigma(_bcast(g, x))
    out = denoise(alpha * x + sigma * eps, g)
    if prediction == "eps":
        return 0.5 * dg * sum_flat((eps - out) ** 2)
    return 0.5 * dg * torch.exp(-g) * sum_flat((x - out) ** 2)


def diffusion_loss(x: Tensor, gamma: nn.Module, denoise, *, t: Tensor | None = None, eps: Tensor | None = None,
                   prediction: str = "eps") -> Tensor:
    """L_inf estimated with one t and one eps per example, [N] nats (see the module docstring).

    denoise(z_t [N, ...], gamma_t [N]) -> eps_hat (prediction="eps") or x_hat (prediction="x"), like x:
    any denoiser, conditioned on gamma_t (equivalently on SNR(t)). t ~ ``low_discrepancy_times`` and
    eps ~ N(0, I) are drawn unless given. gamma'(t) comes from autograd.
    """
    t = low_discrepancy_times(x.shape[0], x.device).to(x.dtype) if t is None else t
    eps = torch.randn_like(x) if eps is None else eps
    g, dg = gamma_and_derivative(gamma, t)
    return _integrand(x, g, dg, denoise, eps, prediction)


def diffusion_loss_quadrature(x: Tensor, gamma: nn.Module, denoise, eps: Tensor, *, nodes: int = 128,
                              prediction: str = "x") -> Tensor:
    """E_t of L_inf's integrand for a *fixed* eps, by Gauss-Legendre quadrature on t in [0, 1], [N] nats.

    The same eps for every t makes the result a deterministic function of (x, eps, schedule), so two
    schedules can be compared without Monte Carlo noise: with a denoiser of (z, gamma) only, schedules
    with the same end points give the same value (up to the quadrature's error, which falls fast with
    ``nodes`` for smooth schedules). Arguments as in ``diffusion_loss``.
    """
    import numpy as np

    u, w = np.polynomial.legendre.leggauss(nodes)  # nodes and weights on [-1, 1]
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for t_j, w_j in zip((u + 1) / 2, w / 2):
        t = torch.full((x.shape[0],), float(t_j), dtype=x.dtype, device=x.device)
        g, dg = gamma_and_derivative(gamma, t)
        total = total + float(w_j) * _integrand(x, g, dg, denoise, eps, prediction)
    return total


def prior_kl(x: Tensor, gamma_1: Tensor) -> Tensor:
    """KL(q(z_1 | x) || N(0, I)) = 1/2 sum_i (alpha_1^2 x_i^2 + sigma_1^2 - 1 - log sigma_1^2), [N] nats."""
    g = _bcast(torch.as_tensor(gamma_1, dtype=x.dtype, device=x.device).expand(x.shape[0]), x)
    alpha2, sigma2 = torch.sigmoid(-g), torch.sigmoid(g)
    return 0.5 * sum_flat(alpha2 * x ** 2 + sigma2 - 1 - F.logsigmoid(g))


def reconstruction_nll(x: Tensor, gamma_0, eps: Tensor | None = None, bins: int = 256) -> Tensor:
    """-log p(x | z_0) at one z_0 = alpha_0 x + sigma_0 eps, [N] nats, for x on the grid of ``bins`` values in [-1, 1].

    p(x_i = v_k | z_0) = softmax_k( -(z_0,i / alpha_0 - v_k)^2 / (2 exp(gamma_0)) ) (VDM appendix): a
    Gaussian around u = z_0 / alpha_0 with variance s^2 = sigma_0^2 / alpha_0^2 = exp(gamma_0), normalised
    over the values. It sums to one over the values, so the bound is on the probability of the 8-bit image.
    The normaliser sums over the values within 10 s + 2 steps of u only (all of them when s is large):
    the others are below e^-50 of the largest term, so the result is exact in floating point, and at
    VDM's gamma_0 = -13.3 (s = 0.0013, a sixth of a step) it is 7 values instead of 256.
    """
    step = 2 / (bins - 1)
    index = (x + 1) / step
    if (index - index.round()).abs().max() > 1e-3:
        raise ValueError(f"VDM's bound is for {bins}-level data: x must be k / {(bins - 1) / 2} - 1; pass uint8 images "
                         "(preprocess scales them) or course_lib.data.to_signed(x).")
    g = _bcast(torch.as_tensor(gamma_0, dtype=x.dtype, device=x.device).expand(x.shape[0]), x)
    alpha, sigma = alpha_sigma(g)
    eps = torch.randn_like(x) if eps is None else eps
    u = (alpha * x + sigma * eps) / alpha  # z_0 / alpha_0, (N, ...)
    var = torch.exp(g)  # s^2
    width = min(bins - 1, math.ceil(10 * var.max().sqrt().item() / step) + 2)
    nearest = ((u + 1) / step).round().clamp(0, bins - 1)
    k = nearest[..., None] + torch.arange(-width, width + 1, device=x.device, dtype=x.dtype)  # (N, ..., 2W + 1)
    logits = -(u[..., None] - (k * step - 1)) ** 2 / (2 * var[..., None])
    logits = logits.masked_fill((k < 0) | (k > bins - 1), -math.inf)  # values off the grid
    return -sum_flat(-(u - x) ** 2 / (2 * var) - torch.logsumexp(logits, dim=-1))


class FourierFeatures(nn.Module):
    """[x, sin(2^n pi x), cos(2^n pi x) for n = n_min..n_max] along dim 1: [N, C, ...] -> [N, C (1 + 2F), ...].

    VDM (section 3.3 and appendix) adds such high-frequency features of z_t to the network's input: at
    low noise the likelihood depends on the last bits of each pixel (a step of 2 / 255 in [-1, 1]),
    which a network sees poorly through smooth activations of z itself. F = n_max - n_min + 1.
    """

    def __init__(self, n_min: int = 7, n_max: int = 8):
        super().__init__()
        if n_max < n_min:
            raise ValueError(f"need n_min <= n_max (got {n_min}, {n_max}).")
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_min, n_max + 1).float(), persistent=False)

    def channels(self, c: int) -> int:
        """Output channels for c input channels."""
        return c * (1 + 2 * len(self.freqs))

    def forward(self, x: Tensor) -> Tensor:
        freqs = self.freqs.view(1, -1, *([1] * (x.dim() - 1)))  # (1, F, 1, ...)
        h = x.unsqueeze(1) * freqs  # (N, F, C, ...): channels [sin of x at 2^n_min pi, ...] frequency by frequency
        return torch.cat([x, torch.sin(h).flatten(1, 2), torch.cos(h).flatten(1, 2)], dim=1)


class VDM(GenerativeModel):
    """A VDM on the training contract: ``loss`` is the bound in bits/dim, ``sample`` is ancestral sampling.

    eps_model: eps_hat, called as ``eps_model(input, c, y)`` with input = z_t (or z_t and its Fourier
    features when ``fourier`` is given) and c = time_scale (gamma_t - gamma_min) / (gamma_max - gamma_min)
    in [0, time_scale]: the network sees gamma_t, not t, so L_inf depends only on the end points.
    gamma: ``LinearGamma`` (default) or ``MonotoneGamma`` (learned: its parameters are trained to
    minimise the variance of the diffusion loss, VDM section 5.2, with an optimizer of their own).
    """

    def __init__(self, eps_model: nn.Module, data_shape: tuple[int, ...], gamma: nn.Module | None = None,
                 fourier: FourierFeatures | None = None, time_scale: float = 1000.0):
        super().__init__()
        self.eps_model, self.data_shape, self.time_scale = eps_model, tuple(data_shape), float(time_scale)
        self.gamma = gamma if gamma is not None else LinearGamma()
        self.fourier = fourier

    def eps_hat(self, z: Tensor, g: Tensor, y: Tensor | None = None) -> Tensor:
        """The network's eps prediction at z_t [N, ...] with gamma_t [N]."""
        c = self.time_scale * (g - self.gamma.gamma_min) / (self.gamma.gamma_max - self.gamma.gamma_min)
        return self.eps_model(z if self.fourier is None else self.fourier(z), c, y)

    def terms(self, x: Tensor, y: Tensor | None = None, *, t: Tensor | None = None) -> dict:
        """Per-example terms of the bound in nats, [N] each: "diffusion", "prior", "recon", "total"."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"expected data of shape [N, {', '.join(map(str, self.data_shape))}], got {list(x.shape)}.")
        ends = self.gamma(torch.tensor([0.0, 1.0], device=x.device, dtype=x.dtype))
        diffusion = diffusion_loss(x, self.gamma, lambda z, g: self.eps_hat(z, g, y), t=t)
        prior, recon = prior_kl(x, ends[1]), reconstruction_nll(x, ends[0])
        return {"diffusion": diffusion, "prior": prior, "recon": recon, "total": diffusion + prior + recon}

    def _bits(self, nats: Tensor) -> Tensor:
        return nats / (math.prod(self.data_shape) * math.log(2.0))

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict:
        """{"loss": the bound in bits/dim (batch mean), "diffusion", "prior", "recon": its parts in bits/dim}."""
        terms = {k: self._bits(v).mean() for k, v in self.terms(x, y).items()}
        return {"loss": terms.pop("total"), **terms}

    @torch.no_grad()
    def nll_bits_per_dim(self, x: Tensor, y: Tensor | None = None, repeats: int = 1) -> Tensor:
        """The bound in bits/dim per example, [N], averaged over ``repeats`` draws of (t, eps)."""
        return torch.stack([self._bits(self.terms(x, y)["total"]) for _ in range(repeats)]).mean(0)

    def _schedule_params(self) -> list[nn.Parameter]:
        return [p for p in self.gamma.parameters() if p.requires_grad]

    def configure_optimizers(self, lr: float):
        """One Adam; with a learned schedule a second one, "schedule", for its parameters."""
        if not self._schedule_params():
            return torch.optim.Adam(self.parameters(), lr=lr)
        ids = {id(p) for p in self._schedule_params()}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return {"model": torch.optim.Adam(rest, lr=lr), "schedule": torch.optim.Adam(self._schedule_params(), lr=lr)}

    def train_step(self, x: Tensor, y: Tensor | None, step: int, update) -> dict:
        """The network minimises the bound; a learned schedule minimises E[L_inf^2] (its variance, since
        the mean does not depend on it) with the gradient d mean(l^2) / d eta, l the per-example L_inf."""
        params = self._schedule_params()
        if not params:
            return super().train_step(x, y, step, update)
        terms = self.terms(x, y)
        total = self._bits(terms["total"]).mean()
        grads = torch.autograd.grad(self._bits(terms["diffusion"]).pow(2).mean(), params, retain_graph=True)
        out = {"loss": total.detach(), "grad_norm": update(total, "model")}
        # a surrogate whose gradient is `grads`: hands the variance gradient to the "schedule" optimizer
        out["schedule_grad_norm"] = update(sum((p * g).sum() for p, g in zip(params, grads)), "schedule")
        return out

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, *, steps: int = 256,
               generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling on t_i = i / steps, from z_1 ~ N(0, I); returns x [n, *data_shape] on the grid.

        Each step draws z_s ~ q(z_s | z_t, x = x_hat) for s < t, with c = -expm1(gamma_s - gamma_t):
        mean = alpha_s / alpha_t (z_t - c sigma_t eps_hat), variance = c sigma_s^2 (VDM appendix A.4).
        At the end x is the most likely pixel value under p(x | z_0): z_0 / alpha_0 rounded to the grid.
        """
        device = next(self.parameters()).device
        if isinstance(y, int):
            y = torch.full((n,), y, device=device, dtype=torch.long)
        was_training = self.training
        self.eval()
        z = torch.randn((n, *self.data_shape), generator=generator, device=device)
        times = torch.linspace(1, 0, steps + 1, device=device)
        for t, s in zip(times[:-1], times[1:]):
            g_t, g_s = self.gamma(t.expand(n)), self.gamma(s.expand(n))
            eps = self.eps_hat(z, g_t, y)
            (alpha_t, sigma_t), (alpha_s, sigma_s) = alpha_sigma(_bcast(g_t, z)), alpha_sigma(_bcast(g_s, z))
            c = -torch.expm1(_bcast(g_s - g_t, z))
            z = alpha_s / alpha_t * (z - c * sigma_t * eps)
            z = z + (c * sigma_s ** 2).sqrt() * torch.randn(z.shape, generator=generator, device=device)
        self.train(was_training)
        alpha_0 = alpha_sigma(self.gamma(torch.zeros(1, device=device)))[0]
        return (((z / alpha_0).clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def build_vdm(image_shape: tuple[int, ...], num_classes: int | None = None, *, learned_schedule: bool = False,
              fourier: bool = False, gamma_min: float = -13.3, gamma_max: float = 5.0, **unet_options) -> VDM:
    """Zoo name ``vdm``: a VDM with notebook 06's U-Net for images (C, H, W) in [-1, 1] (8-bit data).

    learned_schedule: ``MonotoneGamma`` instead of ``LinearGamma``; fourier: Fourier features (n = 7, 8)
    of z_t as extra input channels; other options are ``UNetConfig`` fields (e.g. base_channels=16).
    """
    from course_lib.diffusion.flow_matching import image_unet

    features = FourierFeatures() if fourier else None
    in_channels = features.channels(image_shape[0]) if features is not None else None
    gamma = (MonotoneGamma if learned_schedule else LinearGamma)(gamma_min, gamma_max)
    return VDM(image_unet(tuple(image_shape), num_classes, in_channels, **unet_options), image_shape, gamma, features)
