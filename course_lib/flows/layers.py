"""Invertible layers of a normalizing flow (notebook 05, sections 2 and 3).

Every layer maps data towards the latent space and back::

    z, log_det = layer(x)      # forward:  z = f(x),  log_det = log |det df/dx|, shape [N]
    x = layer.inverse(z)       # inverse:  x = f^{-1}(z)   (named inverse, never backward)

so a stack of layers has ``log_det = sum of the layers' log_det`` (the chain rule for Jacobians,
det(AB) = det A det B), which ``FlowSequence`` adds up. With a prior p_Z, the change of variables
gives log p_X(x) = log p_Z(f(x)) + log |det df/dx|.

=====================  ==========================================  ===================================
layer                  forward z = f(x)                            log_det per example
=====================  ==========================================  ===================================
``AffineCoupling``     z = b*x + (1-b)*(x*exp(s(b*x)) + t(b*x))     sum((1-b) * s)
``ActNorm``            z = x * exp(log_scale) + bias (per channel)  H*W * sum(log_scale)
``Invertible1x1Conv``  z[:, :, h, w] = W x[:, :, h, w]              H*W * log|det W| = H*W * sum(log_s)
``Squeeze``            [C, H, W] -> [4C, H/2, W/2] (a reshuffle)   0
=====================  ==========================================  ===================================

Shapes: images ``[N, C, H, W]``; the coupling and ActNorm also accept vectors ``[N, D]`` (2D flows).
References: Dinh et al. 2017 (RealNVP: affine coupling, checkerboard and channel masks, squeeze),
Kingma & Dhariwal 2018 (Glow: ActNorm, invertible 1x1 convolution with an LU parameterisation).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "FlowSequence",
    "Invertible1x1Conv",
    "Squeeze",
    "channel_mask",
    "checkerboard_mask",
]


def checkerboard_mask(channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """b[c, h, w] = 1 where (h + w) % 2 == parity: [1, C, H, W] (RealNVP's spatial checkerboard)."""
    hw = torch.arange(height).view(-1, 1) + torch.arange(width).view(1, -1)
    return ((hw % 2) == parity).float().expand(channels, height, width).unsqueeze(0).clone()


def channel_mask(channels: int, height: int = 1, width: int = 1, parity: int = 0) -> Tensor:
    """b = 1 on the first half of the channels (parity 0) or the second half (parity 1): [1, C, H, W]
    (for vectors [N, D] pass ``channel_mask(D).view(1, D)``)."""
    if channels < 2:
        raise ValueError(f"a channel mask needs at least 2 channels, got {channels}; use a checkerboard mask "
                         "(or squeeze the image first)")
    b = (torch.arange(channels) < channels // 2).float()
    b = b if parity == 0 else 1 - b
    return b.view(1, channels, 1, 1).expand(1, channels, height, width).clone()


class AffineCoupling(nn.Module):
    """RealNVP's affine coupling layer with a binary mask b (1 = passed through unchanged).

    forward:  z = b*x + (1-b) * (x * exp(s) + t),  (s, t) = net(b*x)
    inverse:  x = b*z + (1-b) * (z - t) * exp(-s)  (b*z = b*x, so s and t can be recomputed)
    log_det = sum over dimensions of (1-b) * s      [N]

    The Jacobian is block-triangular (dz_b/dx = I on the kept half, dz/dx of the changed half is
    diag(exp(s)) plus terms that only depend on the kept half), so its determinant is exp(sum s).
    ``net`` maps [N, C, ...] to [N, 2C, ...] (s_raw and t stacked along dim 1); it should start at
    zero (last layer zero-initialised) so the coupling starts as the identity. The scale is
    bounded for stability: s = scale_bound * tanh(s_raw / scale_bound), so |s| < scale_bound.
    """

    def __init__(self, net: nn.Module, mask: Tensor, scale_bound: float = 3.0):
        super().__init__()
        if not torch.all((mask == 0) | (mask == 1)):
            raise ValueError("the coupling mask must hold only 0 and 1")
        self.net = net
        self.register_buffer("mask", mask)  # [1, C, H, W] or [1, D]
        self.scale_bound = scale_bound

    def _s_t(self, x_kept: Tensor) -> tuple[Tensor, Tensor]:
        s_raw, t = self.net(x_kept).chunk(2, dim=1)
        s = self.scale_bound * torch.tanh(s_raw / self.scale_bound)
        keep = 1 - self.mask  # s and t act only on the changed part
        return s * keep, t * keep

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._s_t(x * self.mask)
        z = x * torch.exp(s) + t  # = x on the kept part, where s = t = 0
        return z, s.flatten(1).sum(1)

    def inverse(self, z: Tensor) -> Tensor:
        s, t = self._s_t(z * self.mask)
        return (z - t) * torch.exp(-s)


class ActNorm(nn.Module):
    """Glow's activation normalisation: z = x * exp(log_scale) + bias, one (log_scale, bias) per channel.

    ``data_init(x)`` sets them so that z has zero mean and unit variance per channel on that batch
    (data-dependent initialisation; ``fit`` calls the model's ``data_init`` once before training).
    log_det = (H*W) * sum_c log_scale_c for images [N, C, H, W]; sum_c log_scale_c for vectors [N, C].
    """

    def __init__(self, channels: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def data_init(self, x: Tensor) -> None:
        dims = [0, *range(2, x.dim())]  # all but the channel dimension
        mean, std = x.mean(dims), x.std(dims)
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.bias.copy_(-mean * torch.exp(self.log_scale))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = x * torch.exp(self._view(self.log_scale, x)) + self._view(self.bias, x)
        pixels = x[0, 0].numel()  # H*W (1 for vectors)
        return z, (pixels * self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return (z - self._view(self.bias, z)) * torch.exp(-self._view(self.log_scale, z))


class Invertible1x1Conv(nn.Module):
    """Glow's invertible 1x1 convolution, a learned channel permutation: z = W x at every pixel.

    LU parameterisation: W = P L (U + diag(sign_s * exp(log_s))), P a fixed permutation, L unit lower
    triangular, U strictly upper triangular. Then log|det W| = sum(log_s): O(C) instead of O(C^3),
    and log_det = H*W * sum(log_s). W starts as a random rotation (so the layer mixes channels).
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels, generator=generator))[0]  # random orthogonal
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> Tensor:
        """W = P L (U + diag(sign_s exp(log_s))): [C, C]."""
        eye = torch.eye(len(self.log_s), device=self.log_s.device, dtype=self.log_s.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weight()
        z = torch.einsum("ij,nj...->ni...", w, x)
        pixels = x[0, 0].numel()
        return z, (pixels * self.log_s.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return torch.einsum("ij,nj...->ni...", torch.linalg.inv(self.weight()), z)


class Squeeze(nn.Module):
    """[N, C, H, W] -> [N, 4C, H/2, W/2]: each 2x2 block of pixels becomes 4 channels. log_det = 0
    (a permutation of the values). RealNVP uses it to trade resolution for channels."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs an even height and width, got {h}x{w}; pad or crop the image")
        z = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return z, x.new_zeros(n)

    def inverse(self, z: Tensor) -> Tensor:
        n, c4, h, w = z.shape
        c = c4 // 4
        return z.view(n, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * h, 2 * w)


class FlowSequence(nn.Module):
    """Layers applied in order: z = f_K(...f_1(x)), log_det = sum_k log_det_k; inverse in reverse order.

    ``data_init(x)`` runs the layers in order and initialises every ActNorm on the input it sees.
    """

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    @torch.no_grad()
    def data_init(self, x: Tensor) -> Tensor:
        """Initialise the ActNorms from ``x`` (layer by layer); returns the output z."""
        for layer in self.layers:
            if hasattr(layer, "data_init"):
                layer.data_init(x)  # an ActNorm, or a nested sequence initialising its own
            x, _ = layer(x)
        return x
