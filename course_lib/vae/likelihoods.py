"""Decoder likelihoods p(x | z) of the VAE family (notebook 03, section "Decoders for binary and 8-bit pixels").

A decoder network outputs *parameters*; a likelihood turns them into log p(x | z) and knows which
input it models. One per kind of data:

========================  ======================================  ============================  =========
likelihood                models                                   decoder output per pixel      channels
========================  ======================================  ============================  =========
``Bernoulli``             binarized pixels x in {0, 1}             a logit l: p(x=1) = sigmoid(l)  C
``DiscretizedLogistic``   8-bit pixels, scaled to [-1, 1]          mean m and log scale log s      2 C
``Gaussian``              real vectors (2D toy points)             mean mu and log variance        2 D
========================  ======================================  ============================  =========

Gaussian (the lecture's p(x | z) = N(x | mu(z), sigma^2 I), for continuous data such as the 2D sets)::

    log p(x | z) = -1/2 sum_i [ log(2 pi) + log_var_i + (x_i - mu_i)^2 / exp(log_var_i) ]   (a density, not a probability)

Bernoulli (binarized MNIST, the VAE literature's benchmark)::

    log p(x | z) = sum_i [ x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i)) ]      (nats, summed over pixels)

Discretized logistic (Kingma et al. 2016, "Improved variational inference with inverse
autoregressive flow", and Salimans et al. 2017, PixelCNN++, with one component): the logistic
density with mean m and scale s is integrated over the bin of width 2/255 around each of the 256
pixel values x in {-1, -1 + 2/255, ..., 1}; the two edge bins extend to -inf and +inf, so the 256
probabilities sum to exactly 1 and log p(x | z) is the log-*probability* of the integer pixels
(``nll_of="discrete"`` in ``course_lib.evaluate.bpd``)::

    P(x) = sigmoid((x + 1/255 - m) / s) - sigmoid((x - 1/255 - m) / s)
    P(-1) = sigmoid((-1 + 1/255 - m) / s),    P(1) = 1 - sigmoid((1 - 1/255 - m) / s)

Chosen over a 256-way categorical (PixelCNN's softmax) because it needs 2 instead of 256 output
channels per pixel and puts nearby grey levels close together; the price is a unimodal pixel
distribution. log P is computed exactly and stably in both tails with (a > b the two edges)

    log(sigmoid(a) - sigmoid(b)) = -softplus(-a) - softplus(b) + log(1 - exp(b - a)).

Each likelihood has: ``out_channels(C)``, ``preprocess(x_uint8)`` (random draws on the batch's
device with the global generator), ``check(x)`` (floats given directly), ``log_prob(x, params) -> [N]``,
``mean(params)`` (x_hat, in the input space), ``sample(params)`` and ``postprocess(x) -> uint8``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib.data.transforms import to_signed, to_uint8, to_unit
from course_lib.nn import sum_flat

__all__ = ["LIKELIHOODS", "Bernoulli", "DiscretizedLogistic", "Gaussian", "discretized_logistic_log_prob", "get_likelihood"]


class Bernoulli:
    """p(x | z) = prod_i Bernoulli(x_i; sigmoid(l_i)) on binarized pixels; the decoder outputs logits l."""

    name = "bernoulli"

    @staticmethod
    def out_channels(channels: int) -> int:
        return channels

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        """uint8 -> {0, 1}: each pixel ~ Bernoulli(x / 255), drawn afresh for every batch ("dynamic
        binarization"), on the batch's device with the global generator (``fit`` checkpoints it)."""
        return torch.bernoulli(to_unit(x))

    @staticmethod
    def check(x: Tensor) -> Tensor:
        if not x.is_floating_point() or ((x != 0) & (x != 1)).any():
            raise ValueError("the Bernoulli decoder models binarized pixels: pass uint8 images (binarized by "
                             "preprocess) or floats that are exactly 0 or 1 (course_lib.data.binarize)")
        return x

    @staticmethod
    def log_prob(x: Tensor, logits: Tensor) -> Tensor:
        """log p(x | z) [N] in nats; x in {0, 1} and logits [N, C, H, W] (or [N, D])."""
        return -sum_flat(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))

    @staticmethod
    def mean(logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    @staticmethod
    def sample(logits: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits))

    @staticmethod
    def postprocess(x: Tensor) -> Tensor:
        """Probabilities or {0, 1} pixels -> uint8 round(255 x)."""
        return (x.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256) -> Tensor:
    """log P(x) elementwise for x on the grid {-1, ..., 1} of ``bins`` values under a logistic(mean, exp(log_scale))
    integrated over each bin (edge bins to -inf / +inf; see the module docstring). Shapes broadcast."""
    half_bin = 1.0 / (bins - 1)
    inv_s = torch.exp(-log_scale)
    a = (x + half_bin - mean) * inv_s  # upper edge, standardised
    b = (x - half_bin - mean) * inv_s  # lower edge
    log_upper = -F.softplus(-a)  # log sigmoid(a): mass below the upper edge (the bin at -1)
    log_lower_tail = -F.softplus(b)  # log(1 - sigmoid(b)): mass above the lower edge (the bin at 1)
    log_mid = log_upper + log_lower_tail + torch.log(-torch.expm1(b - a))
    return torch.where(x < -1.0 + half_bin, log_upper, torch.where(x > 1.0 - half_bin, log_lower_tail, log_mid))


class DiscretizedLogistic:
    """p(x | z): a discretized logistic per pixel of 8-bit images scaled to [-1, 1]; the decoder outputs
    [N, 2C, H, W] = (mean, log_scale) stacked on the channels. The mean is used as output (the edge
    bins take any mass beyond [-1, 1]); the log scale is bounded below (log s >= -7) for stability."""

    name = "logistic"
    min_log_scale = -7.0

    @staticmethod
    def out_channels(channels: int) -> int:
        return 2 * channels

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        """uint8 -> x / 127.5 - 1 in [-1, 1]: the 256 grey levels are kept (no random draw)."""
        return to_signed(x)

    @staticmethod
    def check(x: Tensor) -> Tensor:
        if not x.is_floating_point() or x.min() < -1 - 1e-4 or x.max() > 1 + 1e-4:
            raise ValueError("the discretized logistic decoder models 8-bit pixels scaled to [-1, 1]: pass the "
                             "uint8 images (preprocess scales them) or course_lib.data.to_signed(x)")
        return x

    @classmethod
    def split(cls, params: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_scale = params.chunk(2, dim=1)
        return mean, log_scale.clamp(min=cls.min_log_scale)

    @classmethod
    def log_prob(cls, x: Tensor, params: Tensor) -> Tensor:
        """log P(x | z) [N] in nats (a probability of the integer pixels); x in [-1, 1], params [N, 2C, H, W]."""
        mean, log_scale = cls.split(params)
        return sum_flat(discretized_logistic_log_prob(x, mean, log_scale))

    @classmethod
    def mean(cls, params: Tensor) -> Tensor:
        return cls.split(params)[0].clamp(-1, 1)

    @classmethod
    def sample(cls, params: Tensor) -> Tensor:
        """Draw the logistic by inversion, m + s log(u / (1 - u)), then round to the nearest grey level."""
        mean, log_scale = cls.split(params)
        u = torch.rand_like(mean).clamp(1e-6, 1 - 1e-6)
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1

    @staticmethod
    def postprocess(x: Tensor) -> Tensor:
        return to_uint8(x)


class Gaussian:
    """p(x | z) = N(x; mu, diag(exp(log_var))) on real-valued data; the decoder outputs [N, 2D] = (mu, log_var)
    (or [N, 2C, H, W]). A density: use it for continuous data (2D points), not to score 8-bit images."""

    name = "gaussian"

    @staticmethod
    def out_channels(channels: int) -> int:
        return 2 * channels

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        raise TypeError("the Gaussian decoder models real-valued data (e.g. 2D points); for uint8 images use "
                        "decoder='bernoulli' (binarized) or decoder='logistic' (8-bit)")

    @staticmethod
    def check(x: Tensor) -> Tensor:
        if not x.is_floating_point():
            raise TypeError(f"the Gaussian decoder models real-valued data, got dtype {x.dtype}")
        return x

    @staticmethod
    def split(params: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = params.chunk(2, dim=1)
        return mu, log_var

    @classmethod
    def log_prob(cls, x: Tensor, params: Tensor) -> Tensor:
        """log N(x; mu, diag(exp(log_var))) [N], summed over the data dimensions."""
        mu, log_var = cls.split(params)
        return -0.5 * sum_flat(math.log(2 * math.pi) + log_var + (x - mu) ** 2 * torch.exp(-log_var))

    @classmethod
    def mean(cls, params: Tensor) -> Tensor:
        return cls.split(params)[0]

    @classmethod
    def sample(cls, params: Tensor) -> Tensor:
        mu, log_var = cls.split(params)
        return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)

    @staticmethod
    def postprocess(x: Tensor) -> Tensor:
        return to_uint8(x) if x.dim() == 4 else x


LIKELIHOODS = {"bernoulli": Bernoulli, "logistic": DiscretizedLogistic, "gaussian": Gaussian}


def get_likelihood(name: str):
    """The likelihood class for ``decoder=name``, with a clear error for unknown names."""
    if name not in LIKELIHOODS:
        raise ValueError(f"decoder={name!r} is not known; choose 'bernoulli' (binarized pixels, e.g. MNIST digits), "
                         "'logistic' (8-bit grey levels, a discretized logistic) or 'gaussian' (real vectors, 2D points)")
    return LIKELIHOODS[name]
