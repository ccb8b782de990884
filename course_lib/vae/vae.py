"""The variational autoencoder (Kingma & Welling 2014) and a plain autoencoder (notebook 03).

Latent variable model, as in the lecture: p(z) = N(0, I), decoder p(x | z), encoder
q(z | x) = N(mu(x), diag(exp(log_var(x)))). The loss is the negative ELBO, per example::

    -ELBO(x) = -E_{q(z|x)}[log p(x | z)] + KL(q(z | x) || p(z))        ("recon" + "kl")
    KL(q || p) = integral q(z) log(q(z) / p(z)) dz
               = 1/2 sum_d (mu_d^2 + exp(log_var_d) - 1 - log_var_d)      (closed form, gaussian_kl)

and log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)) >= ELBO(x). The expectation is estimated with one
reparameterised draw z = mu + exp(log_var / 2) * eps, eps ~ N(0, I), so gradients flow into mu and
log_var. The KL weight ``beta`` (beta-VAE; 1 is the ELBO) can be set by a callback
(``result.model.beta = ...``) or ramped from 0 to ``beta`` over the first ``kl_warmup`` steps.

Test log-likelihood: the importance-weighted bound of Burda et al. (2016, IWAE), k draws z_j ~ q(z|x)::

    log p(x) >= L_k(x) = log (1/k) sum_j p(x | z_j) p(z_j) / q(z_j | x),   L_1 = ELBO <= L_k <= L_{k+1} -> log p(x)

(each inequality in expectation over the draws). The terms are the importance log-weights
log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x) (``importance_log_weights``); K draws give
L_k for every k that divides K (``iwae_from_log_weights``: the mean of L_k over the K / k disjoint
groups of k draws), so one pass with K = 1000 also scores k = 1, 10 and 100.

Shapes: x [N, C, H, W]; mu, log_var, z [N, latent_dim]; x_hat [N, C, H, W]; every per-example
quantity [N] in nats. The decoders (Bernoulli, discretized logistic) are in ``likelihoods``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.distributions import gaussian_kl
from course_lib.vae.likelihoods import get_likelihood
from course_lib.vae.networks import check_image_shape, conv_decoder, conv_encoder, mlp

__all__ = ["VAE", "AutoEncoder", "importance_log_weights", "iwae_bound", "iwae_from_log_weights",
           "kl_to_standard_normal", "negative_elbo", "reparameterize"]


def reparameterize(mu: Tensor, log_var: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + sigma * eps with sigma = exp(log_var / 2), eps ~ N(0, I) (drawn on mu's device if not given)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * log_var) * eps


def kl_to_standard_normal(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(log_var))) || N(0, I)) [N], summed over the latent dimensions (last axis)."""
    return gaussian_kl(mu, log_var, torch.zeros_like(mu), torch.zeros_like(log_var)).sum(dim=-1)


def negative_elbo(log_likelihood: Callable[[Tensor], Tensor], mu: Tensor, log_var: Tensor) -> tuple[Tensor, Tensor]:
    """(recon, kl), each [N]: recon = -log p(x | z) at one draw z ~ q(z | x), kl = KL(q(z | x) || p(z)).

    ``log_likelihood(z)`` maps z [N, D] to log p(x | z) [N] (x is fixed inside it). -ELBO = recon + kl.
    """
    z = reparameterize(mu, log_var)
    return -log_likelihood(z), kl_to_standard_normal(mu, log_var)


def importance_log_weights(log_likelihood: Callable[[Tensor], Tensor], mu: Tensor, log_var: Tensor, k: int,
                           chunk: int | None = None) -> Tensor:
    """log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x) for k draws z_j ~ q(z | x) iid: [k, N] nats.

    ``log_likelihood(z)`` maps z [c, N, D] (c draws for each of the N examples) to log p(x | z) [c, N].
    The draws are made ``chunk`` at a time (one [chunk, N, D] block of noise each), so the decoder
    sees at most chunk * N latents per call; the result holds k * N numbers.
    """
    if k < 1:
        raise ValueError(f"k must be a positive number of importance samples, got {k}")
    chunk = k if chunk is None else max(1, int(chunk))
    std = torch.exp(0.5 * log_var)
    out = []
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        eps = torch.randn((c, *mu.shape), device=mu.device, dtype=mu.dtype)  # (c, N, D)
        z = mu + std * eps
        log_pz = -0.5 * (z ** 2 + math.log(2 * math.pi)).sum(-1)  # log N(z; 0, I)         (c, N)
        log_qz = -0.5 * (eps ** 2 + log_var + math.log(2 * math.pi)).sum(-1)  # log q(z | x)  (c, N)
        out.append(log_likelihood(z) + log_pz - log_qz)
    return torch.cat(out)


def iwae_bound(log_likelihood: Callable[[Tensor], Tensor], mu: Tensor, log_var: Tensor, k: int,
               chunk: int | None = None) -> Tensor:
    """L_k = log (1/k) sum_{j=1}^k w_j, w_j = p(x|z_j) p(z_j) / q(z_j|x), z_j ~ q(z|x) iid: [N] nats.

    Arguments as in ``importance_log_weights`` (the k draws are made ``chunk`` at a time).
    """
    log_w = importance_log_weights(log_likelihood, mu, log_var, k, chunk)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iwae_from_log_weights(log_weights: Tensor, k: int) -> Tensor:
    """The mean of L_k over the K / k disjoint groups of k consecutive draws: [N] nats.

    log_weights [K, N] (``importance_log_weights``); k must divide K. k = 1 gives the mean of the
    log-weights (the ELBO estimated with K draws), k = K the single L_K.
    """
    total = log_weights.shape[0]
    if k < 1 or total % k:
        raise ValueError(f"k = {k} must be a positive divisor of the number of draws ({total}): "
                         f"draw a multiple of k importance samples")
    groups = log_weights.reshape(total // k, k, *log_weights.shape[1:])  # (K / k, k, N)
    return (torch.logsumexp(groups, dim=1) - math.log(k)).mean(0)


class _Base(GenerativeModel):
    """What the autoencoder and the VAE share: the decoder likelihood, data conversion, networks."""

    def __init__(self, image_shape, latent_dim: int, channels: int, decoder: str, enc_out: int,
                 num_classes: int | None, encoder_net: nn.Module | None, decoder_net: nn.Module | None):
        super().__init__()
        self.likelihood = get_likelihood(decoder)
        self.decoder_name, self.latent_dim, self.num_classes = decoder, int(latent_dim), num_classes
        self.image_shape = tuple(image_shape)
        cond = num_classes or 0
        if (encoder_net is None or decoder_net is None) and len(self.image_shape) == 1:  # vectors: MLPs
            d = self.image_shape[0]
            encoder_net = encoder_net or mlp(d, 4 * channels, enc_out)
            decoder_net = decoder_net or mlp(latent_dim + cond, 4 * channels, self.likelihood.out_channels(d))
        elif encoder_net is None or decoder_net is None:
            c, h, w = check_image_shape(image_shape)
            feat = (2 * channels, h // 4, w // 4)
            encoder_net = encoder_net or nn.Sequential(
                conv_encoder(c, channels), nn.Flatten(), nn.Linear(math.prod(feat), enc_out))
            decoder_net = decoder_net or nn.Sequential(
                nn.Linear(latent_dim + cond, math.prod(feat)), nn.SiLU(), nn.Unflatten(1, feat),
                conv_decoder(self.likelihood.out_channels(c), channels))
        self.encoder_net, self.decoder_net = encoder_net, decoder_net
        # a label enters the encoder as a learned shift of its output (= one-hot concatenated to the
        # last layer's input) and the decoder as a one-hot concatenated to z (a conditional VAE)
        self.label_shift = nn.Embedding(num_classes, enc_out) if num_classes else None

    def preprocess(self, x: Tensor) -> Tensor:
        """uint8 images -> the decoder's input space ({0, 1} drawn per batch, or [-1, 1]); floats are checked."""
        if x.dtype == torch.uint8:
            return self.likelihood.preprocess(x)
        return self.likelihood.check(x)

    def postprocess(self, samples: Tensor) -> Tensor:
        return self.likelihood.postprocess(samples)

    def _check_labels(self, y: Tensor | None, n: int) -> None:
        if self.num_classes and y is None:
            raise ValueError(f"this {type(self).__name__} is conditional ({self.num_classes} classes): pass labels y")
        if y is not None and not self.num_classes:
            raise ValueError(f"this {type(self).__name__} is unconditional: build it with num_classes "
                             "(--conditional) to use labels, or pass y=None")
        if y is not None and y.shape != (n,):
            raise ValueError(f"labels must have shape [{n}], got {list(y.shape)}")

    def _encoder_out(self, x: Tensor, y: Tensor | None) -> Tensor:
        self._check_labels(y, x.shape[0])
        out = self.encoder_net(x)
        return out if y is None else out + self.label_shift(y)

    def decode_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """z [N, latent_dim] -> the parameters of p(x | z) (logits, or mean and log scale)."""
        self._check_labels(y, z.shape[0])
        if y is not None:
            z = torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1)
        return self.decoder_net(z)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x_hat [N, C, H, W]: the decoder's mean, in the input space (probabilities, or [-1, 1])."""
        return self.likelihood.mean(self.decode_params(z, y))

    def log_likelihood(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x | z) [N] in nats."""
        return self.likelihood.log_prob(x, self.decode_params(z, y))


class VAE(_Base):
    """A convolutional VAE on the training contract; ``decoder`` = "bernoulli" (binarized) or "logistic" (8-bit).

    ``encoder_net`` (x -> [N, 2 latent_dim]: mu and log_var) and ``decoder_net`` (z -> the decoder's
    parameters) replace the convolutional networks, e.g. by MLPs for 2D data.
    """

    def __init__(self, image_shape=(1, 28, 28), latent_dim: int = 32, channels: int = 32, decoder: str = "bernoulli",
                 beta: float = 1.0, kl_warmup: int = 0, num_classes: int | None = None,
                 encoder_net: nn.Module | None = None, decoder_net: nn.Module | None = None):
        super().__init__(image_shape, latent_dim, channels, decoder, 2 * latent_dim, num_classes,
                         encoder_net, decoder_net)
        if beta < 0 or kl_warmup < 0:
            raise ValueError(f"beta (got {beta}) and kl_warmup (got {kl_warmup}) must be >= 0")
        self.beta_max, self.kl_warmup = float(beta), int(kl_warmup)
        self.beta = float(beta) if not kl_warmup else 0.0  # the weight the next loss uses

    def beta_at(self, step: int) -> float:
        """beta * min(1, step / kl_warmup): the KL weight ramped up linearly ("KL annealing")."""
        return self.beta_max if not self.kl_warmup else self.beta_max * min(1.0, step / self.kl_warmup)

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [N, C, H, W] -> (mu, log_var), each [N, latent_dim]: q(z | x) = N(mu, diag(exp(log_var)))."""
        mu, log_var = self._encoder_out(x, y).chunk(2, dim=1)
        return mu, log_var

    reparameterize = staticmethod(reparameterize)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """{"loss": mean of recon + beta * kl, "recon", "kl", "elbo"}: per-example values averaged, nats."""
        mu, log_var = self.encode(x, y)
        recon, kl = negative_elbo(lambda z: self.log_likelihood(x, z, y), mu, log_var)
        recon, kl = recon.mean(), kl.mean()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl, "elbo": -(recon + kl)}

    def train_step(self, x, y, step, update):
        if self.kl_warmup:
            self.beta = self.beta_at(step)
        terms = super().train_step(x, y, step, update)
        return {**terms, "beta": self.beta}

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, mean: bool = True) -> Tensor:
        """z ~ N(0, I) decoded: x_hat (the decoder's mean, what VAE papers show) or, with mean=False, x ~ p(x | z)."""
        z = torch.randn(n, self.latent_dim, device=next(self.parameters()).device)
        params = self.decode_params(z, y)
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    @torch.no_grad()
    def iwae_log_prob(self, x: Tensor, k: int = 1000, y: Tensor | None = None, batch_size: int = 100,
                      max_decoded: int = 10_000) -> Tensor:
        """The IWAE estimate L_k of log p(x), [N] nats on the model's device (a lower bound in expectation).

        x: the model's input (floats: binarized {0, 1} for the Bernoulli decoder) or uint8 images, which
        ``preprocess`` converts (for the Bernoulli decoder: a *random* binarization; binarize a test set
        once, e.g. ``course_lib.data.binarize(x, stochastic=True, generator=...)``, to score it).
        Examples go ``batch_size`` at a time, the k draws in chunks of at most ``max_decoded`` decoded images.
        """
        log_w = self.importance_log_weights(x, k, y, batch_size, max_decoded)
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    @torch.no_grad()
    def importance_log_weights(self, x: Tensor, k: int = 1000, y: Tensor | None = None, batch_size: int = 100,
                               max_decoded: int = 10_000) -> Tensor:
        """log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x) for k draws z_j ~ q(z | x) per example:
        [k, N] nats on the model's device. Arguments as in ``iwae_log_prob``, which is their logsumexp
        minus log k (same draws for the same seed); ``iwae_from_log_weights`` gives L_k for smaller k."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            x, y = self.preprocess(x.to(device)), None if y is None else y.to(device)
            out = []
            for i in range(0, x.shape[0], batch_size):
                xb, yb = x[i:i + batch_size], None if y is None else y[i:i + batch_size]
                mu, log_var = self.encode(xb, yb)
                chunk = max(1, max_decoded // xb.shape[0])
                out.append(importance_log_weights(partial(self._log_likelihood_of_draws, xb, yb), mu, log_var, k,
                                                  chunk))
            return torch.cat(out, dim=1)
        finally:
            self.train(was_training)

    def _log_likelihood_of_draws(self, x: Tensor, y: Tensor | None, z: Tensor) -> Tensor:
        """log p(x | z_j) [c, N] for c draws z [c, N, D] per example: one decoder call on c * N latents."""
        c, n = z.shape[:2]
        params = self.decode_params(z.reshape(c * n, -1), None if y is None else y.repeat(c))
        return self.likelihood.log_prob(x.repeat(c, *[1] * (x.dim() - 1)), params).view(c, n)


class AutoEncoder(_Base):
    """A plain (deterministic) autoencoder for comparison: z = encoder(x), loss = -log p(x | z), no KL.

    Nothing makes its codes look like N(0, I), so it has no sampler (the contract's default ``sample``
    says so); decode hand-picked z to see what lies between the codes of real images.
    """

    def __init__(self, image_shape=(1, 28, 28), latent_dim: int = 32, channels: int = 32, decoder: str = "bernoulli",
                 num_classes: int | None = None, encoder_net: nn.Module | None = None,
                 decoder_net: nn.Module | None = None):
        super().__init__(image_shape, latent_dim, channels, decoder, latent_dim, num_classes, encoder_net, decoder_net)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x [N, C, H, W] -> z [N, latent_dim]."""
        return self._encoder_out(x, y)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        recon = -self.log_likelihood(x, self.encode(x, y), y).mean()
        return {"loss": recon, "recon": recon}
