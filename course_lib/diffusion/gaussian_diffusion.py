"""Denoising diffusion probabilistic models (Ho et al. 2020): the forward process, its posterior,
the reverse process, the training loss L_simple and the full variational bound L_vlb.

Time indexing (stated once, tested in tests/test_diffusion_process.py)
----------------------------------------------------------------------
Every schedule tensor has length T + 1 and entry t is lecture time t. Entry 0 is the clean
data: ``betas[0] = 0``, ``alpha_bars[0] = 1``. So code ``t`` equals lecture ``t`` in 1..T, a
training step draws t ~ Uniform{1, ..., T}, and the sampling loop reads
``for t in range(T, 0, -1)`` like Algorithm 2. Time arguments are int64 tensors of shape [N]
(one t per example) or a Python int (the same t for the whole batch).

The network eps_theta is any module called as ``model(x_t, t, y=None)`` that returns a tensor
shaped like ``x_t``: its prediction of the noise eps in
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

Notebook 06 derives every formula here and checks it numerically.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from course_lib.distributions import discretized_gaussian_log_likelihood, gaussian_kl
from course_lib.diffusion.guidance import drop_labels
from course_lib.diffusion.schedules import alpha_bars_from_betas, make_betas
from course_lib.nn import mean_flat, sum_flat

__all__ = ["GaussianDiffusion"]

_VARIANCES = ("beta", "beta_tilde")
_DECODERS = ("discretized", "gaussian")


class GaussianDiffusion(nn.Module):
    """The DDPM: a fixed forward process q and a learned reverse process p_theta around ``model``.

    Args:
        model: eps_theta, called as ``model(x_t, t, y)``.
        betas: [T + 1] schedule with betas[0] = 0 (see ``schedules``); or None to build
            ``schedule`` with ``T`` steps.
        data_shape: shape of one example, (C, H, W) for images ((D,) works for vectors).
        variance: the fixed reverse variance sigma_t^2 of p_theta(x_{t-1} | x_t):
            "beta": sigma_t^2 = beta_t (Ho et al.'s default), the exact reverse variance when the
            data are x_0 ~ N(0, I);
            "beta_tilde": sigma_t^2 = beta_tilde_t, the variance of q(x_{t-1} | x_t, x_0), exact
            when the data are one fixed point (beta_tilde_1 = 0, so t = 1 uses beta_tilde_2).
            For data with unit variance per coordinate these are the two extremes; both give
            samples of the same quality (Ho et al. 2020, section 3.2).
        label_dropout: in ``loss``, the probability that an example's label is replaced by
            ``null_label`` (the network's "no label" index), so that one network learns
            p(x | y) and p(x) for classifier-free guidance (``guidance.cfg_eps_fn``).
    """

    def __init__(self, model: nn.Module, betas: Tensor | None = None, *, data_shape: tuple[int, ...],
                 schedule: str = "linear", T: int = 1000, variance: str = "beta",
                 label_dropout: float = 0.0, null_label: int | None = None):
        super().__init__()
        if label_dropout and null_label is None:
            raise ValueError("label_dropout needs null_label, the network's 'no label' index "
                             "(num_classes for course_lib's UNet).")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1) (got {label_dropout}).")
        self.label_dropout, self.null_label = label_dropout, null_label
        if variance not in _VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; choose one of {_VARIANCES}.")
        betas = make_betas(schedule, T) if betas is None else torch.as_tensor(betas, dtype=torch.float64)
        valid = betas.dim() == 1 and len(betas) >= 2 and betas[0] == 0
        if not (valid and ((betas[1:] > 0) & (betas[1:] < 1)).all()):
            raise ValueError("betas must be a 1-D tensor of length T + 1 with betas[0] = 0 and "
                             "0 < beta_t < 1 for t = 1..T (build it with course_lib.diffusion.schedules).")
        self.model = model
        self.data_shape = tuple(data_shape)
        self.variance = variance
        self.T = len(betas) - 1

        # Everything is computed in float64, then stored as float32 buffers (moved by .to(device)).
        alphas = 1.0 - betas
        alpha_bars = alpha_bars_from_betas(betas)  # alpha_bars[0] = 1
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])  # alpha_bar_{t-1}
        buffers = {"betas": betas, "alphas": alphas, "alpha_bars": alpha_bars}

        # q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
        buffers["sqrt_alpha_bars"] = alpha_bars.sqrt()
        buffers["sqrt_one_minus_alpha_bars"] = (1.0 - alpha_bars).sqrt()
        # x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
        buffers["sqrt_recip_alpha_bars"] = 1.0 / alpha_bars.sqrt()
        buffers["sqrt_recip_alpha_bars_minus_one"] = (1.0 / alpha_bars - 1.0).sqrt()

        # posterior q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, beta_tilde_t I), t >= 1
        denom = (1.0 - alpha_bars).clamp(min=1e-20)  # 1 - alpha_bar_0 = 0: entry 0 is never used
        posterior_variance = betas * (1.0 - alpha_bars_prev) / denom  # beta_tilde_t; beta_tilde_1 = 0
        buffers["posterior_variance"] = posterior_variance
        # log beta_tilde_t with beta_tilde_1 (= 0) replaced by beta_tilde_2, so the log stays finite
        clipped = posterior_variance.clone()
        clipped[:2] = posterior_variance[2] if self.T >= 2 else betas[1]
        buffers["posterior_log_variance_clipped"] = clipped.log()
        buffers["posterior_mean_coef_x0"] = betas * alpha_bars_prev.sqrt() / denom
        buffers["posterior_mean_coef_xt"] = (1.0 - alpha_bars_prev) * alphas.sqrt() / denom

        # reverse process p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I)
        if variance == "beta":
            reverse_variance = betas.clone()
            reverse_variance[0] = betas[1]  # entry 0 unused; keeps the log finite
        else:
            reverse_variance = clipped
        buffers["reverse_variance"] = reverse_variance
        buffers["reverse_log_variance"] = reverse_variance.log()

        # Non-persistent: constants of the schedule, rebuilt from (schedule, T) and left out of
        # state_dict, so checkpoints hold only what training changes and the EMA never copies them.
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    # ----------------------------------------------------------------------------------- helpers
    def _at(self, buffer: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """buffer[t] reshaped to broadcast against x: t [N] -> [N, 1, 1, ...]."""
        return buffer[t].reshape(-1, *([1] * (x.dim() - 1)))

    def _time(self, t: Tensor | int, n: int, device: torch.device, min_t: int = 1) -> Tensor:
        """Accept an int or an [N] tensor; check min_t <= t <= T; return an int64 [N] tensor.

        min_t is 0 for q(x_t | x_0) (x_0 itself) and 1 for the posterior and the reverse process.
        """
        if isinstance(t, int):
            if not min_t <= t <= self.T:
                raise ValueError(f"t must lie in {min_t}..{self.T} (lecture time; got {t}).")
            return torch.full((n,), t, device=device, dtype=torch.long)
        t = t.to(device).long()
        if t.shape != (n,):
            raise ValueError(f"t must be an int or a tensor of shape [{n}] (got shape {tuple(t.shape)}).")
        if n and (t.min() < min_t or t.max() > self.T):
            raise ValueError(f"t must lie in {min_t}..{self.T} (lecture time; "
                             f"got {t.min().item()}..{t.max().item()}).")
        return t

    def _check_x0(self, x0: Tensor) -> None:
        if not torch.is_floating_point(x0):
            raise TypeError(f"x0 has dtype {x0.dtype}; scale images to [-1, 1] floats first "
                            "(course_lib.data.to_signed).")
        if tuple(x0.shape[1:]) != self.data_shape:
            raise ValueError(f"expected data of shape [N, {', '.join(map(str, self.data_shape))}], "
                             f"got {list(x0.shape)}.")

    # ------------------------------------------------------------------------ forward process q
    def q_sample(self, x0: Tensor, t: Tensor | int, eps: Tensor | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, eps ~ N(0, I).

        x0: [N, ...]; t: [N] or int; eps: like x0 (drawn if None). Returns x_t like x0.
        """
        t = self._time(t, x0.shape[0], x0.device, min_t=0)
        return self._diffuse(x0, t, torch.randn_like(x0) if eps is None else eps)

    def _diffuse(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:  # q_sample for a checked t
        return (self._at(self.sqrt_alpha_bars, t, x0) * x0
                + self._at(self.sqrt_one_minus_alpha_bars, t, x0) * eps)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and (clipped) log variance of q(x_{t-1} | x_t, x_0), for t >= 1.

            mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                         + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
            beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

        Shapes: mean like x_t; variance and log variance [N, 1, ...] (broadcastable).
        """
        t = self._time(t, x_t.shape[0], x_t.device)
        variance = self._at(self.posterior_variance, t, x_t)
        log_variance = self._at(self.posterior_log_variance_clipped, t, x_t)
        return self._posterior_mean(x0, x_t, t), variance, log_variance

    def _posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:  # mu_tilde_t for a checked t
        return (self._at(self.posterior_mean_coef_x0, t, x_t) * x0
                + self._at(self.posterior_mean_coef_xt, t, x_t) * x_t)

    def predict_x0(self, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """Invert q_sample: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t). Shape of x_t."""
        return self._predict_x0(x_t, self._time(t, x_t.shape[0], x_t.device, min_t=0), eps)

    def _predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:  # predict_x0 for a checked t
        return (self._at(self.sqrt_recip_alpha_bars, t, x_t) * x_t
                - self._at(self.sqrt_recip_alpha_bars_minus_one, t, x_t) * eps)

    def eps_loss_weight(self, t: Tensor | int) -> Tensor:
        """The weight of ||eps - eps_theta||^2 in L_{t-1}: beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)).

        L_{t-1} = weight_t * ||eps - eps_theta(x_t, t)||^2 + (a constant in theta), for t >= 2.
        Returns float32 with t's shape (an int gives a 0-d tensor).
        """
        t = torch.as_tensor(t, device=self.betas.device)
        one_minus_ab = self.sqrt_one_minus_alpha_bars[t] ** 2  # accurate where alpha_bar_t ~ 1 in float32
        return self.betas[t] ** 2 / (2 * self.reverse_variance[t] * self.alphas[t] * one_minus_ab)

    # ----------------------------------------------------------------------- reverse process p
    def p_mean_variance(self, x_t: Tensor, t: Tensor | int, y: Tensor | None = None,
                        clip_x0: bool = True) -> dict:
        """Parameters of p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I).

        mu_theta is the posterior mean with x_0 replaced by the network's guess
        x0_pred = (x_t - sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_bar_t); without clipping
        this is exactly mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_t)
        (Algorithm 2). ``clip_x0`` clamps x0_pred to [-1, 1] first (better samples for images).
        Returns {"mean", "variance", "log_variance", "x0_pred", "eps_pred"}; variances [N, 1, ...].
        """
        t = self._time(t, x_t.shape[0], x_t.device)
        eps_pred = self.model(x_t, t, y)
        x0_pred = self._predict_x0(x_t, t, eps_pred)
        if clip_x0:
            x0_pred = x0_pred.clamp(-1.0, 1.0)
        mean = self._posterior_mean(x0_pred, x_t, t)
        return {"mean": mean, "variance": self._at(self.reverse_variance, t, x_t),
                "log_variance": self._at(self.reverse_log_variance, t, x_t),
                "x0_pred": x0_pred, "eps_pred": eps_pred}

    def p_sample(self, x_t: Tensor, t: Tensor | int, y: Tensor | None = None,
                 generator: torch.Generator | None = None, clip_x0: bool = True) -> Tensor:
        """One reverse step x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I), and z = 0 at t = 1."""
        return self._p_step(x_t, t, y, generator, clip_x0)[0]

    def _p_step(self, x_t, t, y, generator, clip_x0) -> tuple[Tensor, dict]:  # x_{t-1}, p_mean_variance
        out = self.p_mean_variance(x_t, t, y, clip_x0)
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        t = self._time(t, x_t.shape[0], x_t.device) if isinstance(t, int) else t
        noise_on = (t > 1).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))  # 0 where t == 1
        return out["mean"] + noise_on * torch.exp(0.5 * out["log_variance"]) * z, out

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, *, return_chain: bool = False,
               chain_every: int | None = None, generator: torch.Generator | None = None,
               progress: bool = True, clip_x0: bool = True):
        """Algorithm 2: x_T ~ N(0, I); for t = T..1: x_{t-1} ~ p_theta(x_{t-1} | x_t). Returns x_0 [n, ...].

        y: class labels [n] (or one int for all) for a class-conditional network.
        With ``return_chain`` (or ``chain_every=k``) returns ``(x0, chain)`` where chain is a dict:
        "t" [S] (T, T-k, ..., 0), "x_t" [S, n, ...] the states and "x0_pred" [S, n, ...] the
        network's guess of x_0 at each kept step (x0_pred at t = 0 is x_0 itself).
        ``clip_x0`` clamps each guess of x_0, and the result, to [-1, 1] (images; off for other data).
        ``generator`` must live on the model's device.
        """
        device = self.betas.device
        if isinstance(y, int):
            y = torch.full((n,), y, device=device, dtype=torch.long)
        was_training = self.training
        self.eval()
        keep = return_chain or chain_every is not None
        chain_every = chain_every or max(1, self.T // 10)
        x_t = torch.randn((n, *self.data_shape), generator=generator, device=device)  # x_T
        chain_t, chain_x, chain_x0 = [], [], []
        steps = range(self.T, 0, -1)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="sampling", leave=False)
        for t in steps:
            x_prev, out = self._p_step(x_t, t, y, generator, clip_x0)
            if keep and (self.T - t) % chain_every == 0:
                chain_t.append(t)
                chain_x.append(x_t.cpu())
                chain_x0.append(out["x0_pred"].cpu())
            x_t = x_prev  # x_{t-1}
        x0 = x_t.clamp(-1.0, 1.0) if clip_x0 else x_t
        self.train(was_training)
        if not keep:
            return x0
        chain_t.append(0)
        chain_x.append(x0.cpu())
        chain_x0.append(x0.cpu())
        return x0, {"t": torch.tensor(chain_t), "x_t": torch.stack(chain_x), "x0_pred": torch.stack(chain_x0)}

    # ---------------------------------------------------------------------------------- losses
    def loss(self, x0: Tensor, y: Tensor | None = None, t: Tensor | None = None,
             eps: Tensor | None = None) -> dict:
        """L_simple (Algorithm 1), the mean over t, x_0 and eps of

            ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2.

        t ~ Uniform{1, ..., T} and eps ~ N(0, I) are drawn unless given ([N] and like x0).
        In training mode, labels are dropped with probability ``label_dropout``.
        The squared error is averaged over pixels and the batch. Returns {"loss", "mse"} scalars
        ("mse" is the same number, detached, for logging).
        """
        self._check_x0(x0)
        n = x0.shape[0]
        t = torch.randint(1, self.T + 1, (n,), device=x0.device) if t is None else self._time(t, n, x0.device)
        eps = torch.randn_like(x0) if eps is None else eps
        x_t = self._diffuse(x0, t, eps)
        if self.label_dropout and y is not None and self.training:
            y = drop_labels(y, self.label_dropout, self.null_label)
        eps_pred = self.model(x_t, t, y)
        loss = mean_flat((eps - eps_pred) ** 2).mean()
        return {"loss": loss, "mse": loss.detach()}

    def _decoder_nll(self, x0: Tensor, mean: Tensor, log_var: Tensor, decoder: str) -> Tensor:
        """L_0 = -log p_theta(x_0 | x_1) summed over dimensions: [N]."""
        if decoder == "discretized":
            return -sum_flat(discretized_gaussian_log_likelihood(x0, mean, log_var))
        log_density = -0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * torch.exp(-log_var))
        return -sum_flat(log_density.expand_as(x0))

    @torch.no_grad()
    def vlb_terms(self, x0: Tensor, y: Tensor | None = None, *, num_t: int | None = None,
                  decoder: str = "discretized", clip_x0: bool = False,
                  generator: torch.Generator | None = None) -> dict:
        """The bound -log p_theta(x_0) <= L_vlb = L_T + sum_{t=2}^T L_{t-1} + L_0, per example, in nats.

            L_T     = KL(q(x_T | x_0) || N(0, I))                       (no parameters)
            L_{t-1} = E_q(x_t|x_0) KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)),  t = 2..T
            L_0     = E_q(x_1|x_0) [-log p_theta(x_0 | x_1)]

        Each expectation over x_t is estimated with one draw x_t ~ q(x_t | x_0). The decoder is
        "discretized" (8-bit data in [-1, 1], a probability) or "gaussian" (a density, for
        continuous toy data). ``clip_x0=False`` keeps mu_theta the exact eps-parameterised mean.
        By default all T terms are evaluated (T network calls). With ``num_t=K`` only K are, for
        an unbiased estimate by stratified sampling: L_0 always (it is large: a single draw that
        missed or hit it would swing the estimate by hundreds of nats), and one t drawn uniformly
        from each of K - 1 blocks of 2..T, weighted by the block's size. The blocks grow
        geometrically (sizes 1, 1, ..., then longer), because the terms are large and change fast
        at small t and are small and smooth at large t.

        Returns a dict: "t" [K] the evaluated times, "terms" [N, K] with terms[:, j] = L_{t_j - 1},
        "weights" [K] (ones, or the block sizes), "mse" [N, K] the eps mean squared error at
        those t, "prior" [N] = L_T and "total" [N] = prior + sum_j weights_j terms[:, j].
        """
        self._check_x0(x0)
        if decoder not in _DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {_DECODERS}.")
        n, device = x0.shape[0], x0.device
        if num_t is None:
            ts = torch.arange(1, self.T + 1)
            weights = torch.ones(self.T)
        else:
            if not 2 <= num_t <= self.T:
                raise ValueError(f"num_t must lie in 2..T={self.T} (got {num_t}); None evaluates all T terms.")
            starts = _geometric_edges(2, self.T + 1, num_t)  # K block edges: 2, ..., T + 1
            sizes = starts[1:] - starts[:-1]  # (K - 1,), each >= 1
            offsets = (torch.rand(num_t - 1, generator=generator, device=device).cpu() * sizes).long()
            ts = torch.cat([torch.ones(1, dtype=torch.long), starts[:-1] + offsets])
            weights = torch.cat([torch.ones(1, dtype=torch.long), sizes]).float()
        terms, mse = [], []
        for t in ts.tolist():
            eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
            x_t = self.q_sample(x0, t, eps)
            out = self.p_mean_variance(x_t, t, y, clip_x0)
            if t == 1:
                term = self._decoder_nll(x0, out["mean"], out["log_variance"], decoder)
            else:
                mean, _, log_var = self.q_posterior(x0, x_t, t)
                term = sum_flat(gaussian_kl(mean, log_var, out["mean"], out["log_variance"]).expand_as(x0))
            terms.append(term)  # (N,)
            mse.append(mean_flat((eps - out["eps_pred"]) ** 2))
        terms = torch.stack(terms, dim=1)  # (N, K)
        t_last = self._time(self.T, n, device)
        prior_mean = self._at(self.sqrt_alpha_bars, t_last, x0) * x0
        prior_log_var = self._at(self.sqrt_one_minus_alpha_bars, t_last, x0).square().log()
        prior = sum_flat(gaussian_kl(prior_mean, prior_log_var, torch.zeros_like(x0), torch.zeros_like(x0)))
        total = prior + terms @ weights.to(terms)
        return {"t": ts, "terms": terms, "weights": weights, "mse": torch.stack(mse, dim=1), "prior": prior,
                "total": total}

    def nll_bits_per_dim(self, x0: Tensor, y: Tensor | None = None, **vlb_options) -> Tensor:
        """The bound L_vlb in bits per dimension, [N]: total / (D ln 2).

        With the (default) discretized decoder the bound is on -log P(x_0) of the 8-bit image, a
        probability, so no change-of-scale term enters (``course_lib.evaluate.bits_per_dim`` with
        ``nll_of="discrete"``); Ho et al. report 3.70-3.75 bits/dim on CIFAR-10. With the
        "gaussian" decoder it is a density and the number is not comparable with discrete ones.
        ``vlb_options`` go to ``vlb_terms`` (e.g. ``num_t=50`` for a fast unbiased estimate).
        """
        total = self.vlb_terms(x0, y, **vlb_options)["total"]
        if vlb_options.get("decoder", "discretized") == "discretized":
            from course_lib.evaluate import bits_per_dim  # imported here: evaluate is heavier

            return bits_per_dim(total, x0, nll_of="discrete").to(total.dtype)
        return total / (math.prod(self.data_shape) * math.log(2.0))


def _geometric_edges(first: int, last: int, k: int) -> Tensor:
    """k increasing integers from ``first`` to ``last``, spaced about geometrically, all distinct."""
    edges = [first]
    for j in range(1, k):
        target = round(first * (last / first) ** (j / (k - 1)))
        edges.append(min(max(target, edges[-1] + 1), last - (k - 1 - j)))  # distinct, room for the rest
    return torch.tensor(edges)
