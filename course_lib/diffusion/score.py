"""Score matching and score-based SDEs (notebook 08, section 1).

The score of a density p is grad_x log p(x): a vector field pointing uphill. Diffusion models learn
the score of the *noised* data; three results of the lecture live here.

1. Score <-> eps. For x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, Tweedie's formula gives
   grad log q(x_t) = -E[eps | x_t] / sqrt(1 - alpha_bar_t), so a noise predictor *is* a score model:

       score(x_t, t) = -eps_theta(x_t, t) / sqrt(1 - alpha_bar_t)          (``score_from_eps``)

2. Denoising score matching (Vincent 2011) with many noise levels sigma_1 > ... > sigma_L (Song &
   Ermon 2019, "Generative modeling by estimating gradients of the data distribution", NCSN):
   for x~ = x + sigma z, grad log q(x~ | x) = -z / sigma, and the minimiser over s of
   E ||s(x~) + z / sigma||^2 is E[-z / sigma | x~] = grad log q_sigma(x~), the score of the noised
   data (``dsm_loss``, ``ScoreModel``). Samples come from annealed Langevin dynamics (Algorithm 1).

3. The VP-SDE (Song et al. 2021, "Score-based generative modeling through stochastic differential
   equations"): DDPM's forward chain in the limit of many small steps,

       dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,   t in [0, 1],   beta(t) = beta_min + t (beta_max - beta_min)

   with beta_min = 0.1, beta_max = 20 (DDPM's linear schedule with T = 1000: beta(t) = T beta_{tT}).
   Its marginal is q(x_t | x0) = N(sqrt(alpha_bar(t)) x0, (1 - alpha_bar(t)) I) with
   alpha_bar(t) = exp(-int_0^t beta) = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2)).
   Reverse-time SDE (Anderson 1982) and probability-flow ODE, with f = -1/2 beta x, g = sqrt(beta):

       dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar        (``reverse_sde_sample``, Euler-Maruyama)
       dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)                    (``probability_flow_sample``, Heun)

   Both have the same marginals q_t (the ODE is deterministic given x_1).

``mixture_score`` is the exact score of a noised Gaussian mixture, the field the networks should learn.
Shapes: data [N, ...] (points [N, D] or images [N, C, H, W]); noise levels and times [N].
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.diffusion.ode import integrate
from course_lib.nn import mean_flat

__all__ = ["score_from_eps", "eps_from_score", "mixture_score", "geometric_sigmas", "dsm_loss", "ScoreModel",
           "annealed_langevin", "VPSDE", "reverse_sde_sample", "probability_flow_sample"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """A per-example [N] tensor reshaped to [N, 1, ...] to broadcast against x."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _per_example(v, x: Tensor) -> Tensor:
    """A float or an [N] tensor -> an [N] tensor with x's dtype and device."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.expand(x.shape[0]) if v.dim() == 0 else v.reshape(x.shape[0])


# ------------------------------------------------------------------------------ score <-> eps
def score_from_eps(eps: Tensor, alpha_bar) -> Tensor:
    """score(x_t, t) = -eps / sqrt(1 - alpha_bar_t). eps [N, ...]; alpha_bar a float or [N]. Shape of eps."""
    return -eps / _bcast(1 - _per_example(alpha_bar, eps), eps).sqrt()


def eps_from_score(score: Tensor, alpha_bar) -> Tensor:
    """eps = -sqrt(1 - alpha_bar_t) score(x_t, t), the inverse of ``score_from_eps``. Shape of score."""
    return -score * _bcast(1 - _per_example(alpha_bar, score), score).sqrt()


def _mixture_posterior(x: Tensor, means: Tensor, var: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor]:
    """Component probabilities r [N, K] of x [N, D] under sum_k w_k N(means_k, var_k I) and x - means [N, K, D].

    means [N or 1, K, D], var [N or 1, K], log_w [K]: r_k = softmax_k(log w_k + log N(x; means_k, var_k I)).
    """
    diff = x[:, None, :] - means
    log_p = log_w - 0.5 * x.shape[1] * var.log() - (diff ** 2).sum(-1) / (2 * var)
    return torch.softmax(log_p, dim=1), diff


def _mixture_parts(x: Tensor, centres: Tensor, std, weights) -> tuple[Tensor, Tensor, Tensor]:
    """centres [K, D], std^2 [K] and log weights [K] as x's dtype, checked."""
    if x.dim() != 2:
        raise ValueError(f"expected points of shape [N, D], got {list(x.shape)}; flatten images with x.flatten(1).")
    centres = torch.as_tensor(centres, dtype=x.dtype, device=x.device)
    if centres.dim() != 2 or centres.shape[1] != x.shape[1]:
        raise ValueError(f"centres must have shape [K, {x.shape[1]}], got {list(centres.shape)}.")
    k = centres.shape[0]
    var = torch.as_tensor(std, dtype=x.dtype, device=x.device).expand(k) ** 2
    weights = torch.ones(k) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if weights.shape != (k,) or (weights <= 0).any():
        raise ValueError(f"weights must be {k} positive numbers (one per centre).")
    return centres, var, (weights / weights.sum()).log().to(x)


def mixture_score(x: Tensor, centres: Tensor, std, *, scale=1.0, noise_std=0.0, weights=None) -> Tensor:
    """The exact score of a noised Gaussian mixture, in any dimension D.

    Data x0 ~ sum_k w_k N(c_k, std_k^2 I); noised x = scale * x0 + noise_std * eps. Then
    x ~ sum_k w_k N(scale c_k, v_k I), v_k = scale^2 std_k^2 + noise_std^2, and

        grad log p(x) = -sum_k r_k(x) (x - scale c_k) / v_k,    r_k(x) = P(component k | x).

    DDPM/VP: scale = sqrt(alpha_bar), noise_std = sqrt(1 - alpha_bar); NCSN: scale = 1, noise_std = sigma.
    x [N, D]; centres [K, D]; std a float or [K]; scale, noise_std floats or [N]; weights [K] (default
    equal). Returns [N, D].
    """
    centres, std2, log_w = _mixture_parts(x, centres, std, weights)
    scale, noise_std = _per_example(scale, x)[:, None], _per_example(noise_std, x)[:, None]  # (N, 1)
    var = scale ** 2 * std2 + noise_std ** 2  # (N, K)
    r, diff = _mixture_posterior(x, scale[:, :, None] * centres, var, log_w)
    return -(r[:, :, None] * diff / var[:, :, None]).sum(1)  # (N, D)


# ---------------------------------------------------------------- denoising score matching
def geometric_sigmas(sigma_max: float = 1.0, sigma_min: float = 0.01, levels: int = 10) -> Tensor:
    """sigma_1 > ... > sigma_L, a geometric sequence from sigma_max to sigma_min (Song & Ermon 2019). [L] float64."""
    if not 0 < sigma_min < sigma_max or levels < 2:
        raise ValueError(f"need 0 < sigma_min < sigma_max and levels >= 2 (got {sigma_min}, {sigma_max}, {levels}).")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), levels, dtype=torch.float64)


def dsm_loss(score_fn: ScoreFn, x: Tensor, sigmas, *, idx: Tensor | None = None, z: Tensor | None = None) -> Tensor:
    """Noise-conditional denoising score matching (Song & Ermon 2019, eq. 5-6), per example.

        l(x) = lambda(sigma) / 2 * || score_fn(x + sigma z, sigma) + z / sigma ||^2 / D,   lambda(sigma) = sigma^2
             = 1/2 || sigma score_fn(x + sigma z, sigma) + z ||^2 / D

    with sigma = sigmas[idx], idx ~ Uniform{0..L-1} and z ~ N(0, I) drawn unless given. The
    weighting lambda = sigma^2 makes every level's term of order one; dividing by the number of
    dimensions D (a mean over coordinates) keeps the scale the same for points and images.
    score_fn(x_noisy [N, ...], sigma [N]) -> [N, ...]. x [N, ...]; sigmas [L]; idx [N] int64; z like x.
    Returns [N]; its mean is the training loss.
    """
    sigmas = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device)
    if sigmas.dim() != 1 or (sigmas <= 0).any():
        raise ValueError("sigmas must be a 1-D tensor of positive noise levels (e.g. geometric_sigmas()).")
    idx = torch.randint(len(sigmas), (x.shape[0],), device=x.device) if idx is None else idx
    z = torch.randn_like(x) if z is None else z
    sigma = sigmas[idx]  # (N,)
    s = _bcast(sigma, x)
    return 0.5 * mean_flat((s * score_fn(x + s * z, sigma) + z) ** 2)


@torch.no_grad()
def annealed_langevin(score_fn: ScoreFn, x: Tensor, sigmas, *, steps_per_sigma: int = 100, step_size: float = 2e-5,
                      denoise: bool = True, generator: torch.Generator | None = None,
                      return_trajectory: bool = False, keep_every: int = 10):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), from x (e.g. N(0, sigma_1^2 I) draws).

        for sigma_i in sigma_1 > ... > sigma_L:   alpha_i = step_size * sigma_i^2 / sigma_L^2
            repeat steps_per_sigma times:         x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) z

    and, with ``denoise``, one last step x <- x + sigma_L^2 score(x, sigma_L) (Tweedie's formula:
    E[x0 | x], which removes the noise sigma_L that the chain leaves; Song & Ermon 2020).
    score_fn(x, sigma [N]) -> like x. Returns x, or (x, {"x": [S, N, ...], "sigma": [S], "nfe": int})
    with every ``keep_every``-th state when ``return_trajectory``.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.dim() != 1 or not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError("sigmas must be a 1-D tensor in decreasing order (sigma_1 > ... > sigma_L).")
    kept, kept_sigma, nfe = [x.cpu()], [sigmas[0].item()], 0
    for sigma in sigmas.tolist():
        alpha = step_size * sigma ** 2 / sigmas[-1].item() ** 2
        sigma_n = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        for step in range(steps_per_sigma):
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + 0.5 * alpha * score_fn(x, sigma_n) + math.sqrt(alpha) * z
            nfe += 1
            if return_trajectory and (step + 1) % keep_every == 0:
                kept.append(x.cpu())
                kept_sigma.append(sigma)
    if denoise:
        x = x + sigmas[-1].item() ** 2 * score_fn(x, sigma_n)
        nfe += 1
    if not return_trajectory:
        return x
    kept.append(x.cpu())
    kept_sigma.append(sigmas[-1].item())
    return x, {"x": torch.stack(kept), "sigma": torch.tensor(kept_sigma), "nfe": nfe}


class ScoreModel(GenerativeModel):
    """A noise-conditional score network (NCSN) on the training contract: ``loss`` is ``dsm_loss``,
    ``sample`` is annealed Langevin dynamics.

    s_theta(x, sigma) = net(x, c(sigma), y) / sigma, the output scaling of Song & Ermon (2020,
    "Improved techniques for training score-based generative models"): the network predicts
    -z, a quantity of order one at every level. The network sees the noise level as a "time"
    c(sigma) = 1000 log(sigma / sigma_L) / log(sigma_1 / sigma_L) in [0, 1000], like DDPM's t, so
    ``MLPDenoiser`` (2D) and ``UNet`` (images) fit as they are.
    """

    def __init__(self, net: nn.Module, sigmas, data_shape: tuple[int, ...]):
        super().__init__()
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
        if sigmas.dim() != 1 or len(sigmas) < 2 or not (sigmas[1:] < sigmas[:-1]).all() or sigmas[-1] <= 0:
            raise ValueError("sigmas must be positive and decreasing, e.g. geometric_sigmas(1.0, 0.01, 10).")
        self.net, self.data_shape = net, tuple(data_shape)
        self.register_buffer("sigmas", sigmas.float(), persistent=False)

    def score(self, x: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        """s_theta(x, sigma): x [N, ...], sigma [N] -> like x."""
        s_max, s_min = self.sigmas[0], self.sigmas[-1]
        c = 1000 * torch.log(sigma / s_min) / torch.log(s_max / s_min)  # (N,) in [0, 1000]
        return self.net(x, c, y) / _bcast(sigma, x)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict:
        """{"loss": mean of ``dsm_loss`` over the batch} with sigma drawn uniformly from the levels."""
        loss = dsm_loss(lambda x_noisy, sigma: self.score(x_noisy, sigma, y), x, self.sigmas).mean()
        return {"loss": loss}

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, *, steps_per_sigma: int = 100, step_size: float = 2e-5,
               generator: torch.Generator | None = None, return_trajectory: bool = False):
        """Annealed Langevin dynamics from x ~ N(0, sigma_1^2 I); returns [n, *data_shape] (see ``annealed_langevin``)."""
        device = self.sigmas.device
        x = self.sigmas[0] * torch.randn((n, *self.data_shape), generator=generator, device=device)
        return annealed_langevin(lambda x_, s: self.score(x_, s, y), x, self.sigmas, steps_per_sigma=steps_per_sigma,
                                 step_size=step_size, generator=generator, return_trajectory=return_trajectory)


# ---------------------------------------------------------------------------------- VP-SDE
class VPSDE:
    """The variance-preserving SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw on t in [0, 1].

    beta(t) = beta_min + t (beta_max - beta_min); defaults 0.1 and 20 as in Song et al. (2021).
    Methods take t as an [N] float tensor (or a float) and return tensors of t's shape.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max (got {beta_min}, {beta_max}).")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t):
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + torch.as_tensor(t) * (self.beta_max - self.beta_min)

    def log_alpha_bar(self, t):
        """log alpha_bar(t) = -int_0^t beta(s) ds = -(beta_min t + (beta_max - beta_min) t^2 / 2)."""
        t = torch.as_tensor(t)
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2)

    def marginal(self, t) -> tuple[Tensor, Tensor]:
        """(mean coefficient, std) of q(x_t | x0) = N(sqrt(alpha_bar(t)) x0, (1 - alpha_bar(t)) I)."""
        log_ab = self.log_alpha_bar(t)
        return torch.exp(0.5 * log_ab), torch.sqrt(-torch.expm1(log_ab))

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t) = -1/2 beta(t) x; x [N, ...], t [N] (or [1]: the same time for all)."""
        return -0.5 * _bcast(self.beta(t), x) * x

    def diffusion(self, t):
        """g(t) = sqrt(beta(t))."""
        return torch.sqrt(self.beta(t))

    def score_from_eps_model(self, eps_model: nn.Module, y: Tensor | None = None, T: int = 1000) -> ScoreFn:
        """score(x, t) = -eps_model(x, T t, y) / sqrt(1 - alpha_bar(t)) for a network trained as a DDPM with T steps.

        DDPM's linear schedule (beta_1 = 1e-4 .. beta_T = 0.02, T = 1000) is this SDE's discretisation, so
        its eps_theta, called at the real time T t (the U-Net's embedding takes real times), is a score model.
        """
        def score(x: Tensor, t: Tensor) -> Tensor:
            return score_from_eps(eps_model(x, T * t, y), torch.exp(self.log_alpha_bar(t)))
        return score


def _score_fn(sde: VPSDE, score_fn: ScoreFn | None, eps_model: nn.Module | None, y) -> ScoreFn:
    if (score_fn is None) == (eps_model is None):
        raise ValueError("pass exactly one of score_fn (x, t) -> score or eps_model (a DDPM noise network).")
    return score_fn if score_fn is not None else sde.score_from_eps_model(eps_model, y)


def _time_grid(steps: int, t_min: float) -> Tensor:
    if steps < 1 or not 0 < t_min < 1:
        raise ValueError(f"need steps >= 1 and 0 < t_min < 1 (got steps={steps}, t_min={t_min}).")
    return torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)


@torch.no_grad()
def reverse_sde_sample(sde: VPSDE, x: Tensor, score_fn: ScoreFn | None = None, *, eps_model: nn.Module | None = None,
                       y: Tensor | None = None, steps: int = 1000, t_min: float = 1e-3,
                       generator: torch.Generator | None = None, return_trajectory: bool = False):
    """Euler-Maruyama for the reverse SDE from t = 1 (x: draws of N(0, I)) down to t_min.

    On the grid t_k = 1 - k (1 - t_min) / steps, with dt = t_k - t_{k+1} > 0 and z ~ N(0, I):

        x <- x - [f(x, t_k) - g(t_k)^2 score(x, t_k)] dt + g(t_k) sqrt(dt) z

    and no noise in the last step (its mean is returned, as in DDPM's last step). score_fn(x, t [N])
    -> like x, or ``eps_model`` (a DDPM eps_theta, see ``VPSDE.score_from_eps_model``). Returns x at
    t_min, or (x, {"t": [S], "x": [S, N, ...], "nfe": steps}) with every state when ``return_trajectory``.
    """
    score_fn = _score_fn(sde, score_fn, eps_model, y)
    times = _time_grid(steps, t_min)
    kept = [x.cpu()]
    for k in range(steps):
        t = torch.full((x.shape[0],), times[k].item(), dtype=x.dtype, device=x.device)
        dt = (times[k] - times[k + 1]).item()
        g = _bcast(sde.diffusion(t[:1]), x)  # one time for the whole batch: coefficients computed once
        x = x - (sde.drift(x, t[:1]) - g ** 2 * score_fn(x, t)) * dt
        if k < steps - 1:
            x = x + g * math.sqrt(dt) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if return_trajectory:
            kept.append(x.cpu())
    return (x, {"t": times, "x": torch.stack(kept), "nfe": steps}) if return_trajectory else x


@torch.no_grad()
def probability_flow_sample(sde: VPSDE, x: Tensor, score_fn: ScoreFn | None = None, *,
                            eps_model: nn.Module | None = None, y: Tensor | None = None, steps: int = 100,
                            t_min: float = 1e-3, method: str = "heun", return_trajectory: bool = False):
    """Solve the probability-flow ODE dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t) from t = 1 to t_min.

    x: draws of N(0, I) at t = 1 (deterministic from there on). Heun (default, 2 network evaluations
    per step) or Euler on the uniform grid of ``steps`` steps (see ``ode.integrate``). Returns x at
    t_min, or (x, {"t": [S], "x": [S, N, ...], "nfe": int}) when ``return_trajectory``.
    """
    score_fn = _score_fn(sde, score_fn, eps_model, y)

    def velocity(x_: Tensor, t: Tensor) -> Tensor:
        return sde.drift(x_, t[:1]) - 0.5 * _bcast(sde.beta(t[:1]), x_) * score_fn(x_, t)  # t: one time for all

    out = integrate(velocity, x, _time_grid(steps, t_min), method=method, return_trajectory=return_trajectory)
    return (out.x, {"t": out.t, "x": out.trajectory, "nfe": out.nfe}) if return_trajectory else out.x
