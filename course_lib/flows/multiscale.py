"""A RealNVP/Glow-style multi-scale flow for small images such as 28x28 MNIST (notebook 05, section 5).

For an input y [N, C, H, W] in [0, 1] (dequantised pixels, see ``dequantization``)::

    y --logit--> [C, H, W]         level 1: K1 x (ActNorm, checkerboard AffineCoupling)
      --squeeze-> [4C, H/2, W/2]    level 2: K2 x (ActNorm, Invertible1x1Conv, channel AffineCoupling)
      --split---> half the channels are factored out as z_1 [2C, H/2, W/2]
      --squeeze-> [8C, H/4, W/4]    level 3: K3 x (ActNorm, Invertible1x1Conv, channel AffineCoupling) = z_2

Every latent has the prior N(0, I) (at ``temperature`` T: N(0, T^2 I) when sampling). The split
uses Glow's learned prior p(z_1 | kept half) = N(mu, sigma^2) written as one more affine coupling:
z_1 = (h_1 - mu(h_0)) / sigma(h_0) is then standard normal, and the coupling's log_det = -sum log sigma
is exactly the term of that conditional density. So the model is (layers, N(0, I)) throughout:

    log p(y) = sum_i log N(z_i; 0, I) + log_det,      log_det = sum of every layer's log_det   [N]

(Dinh et al. 2017 for the multi-scale architecture; Kingma & Dhariwal 2018 for ActNorm, 1x1
convolutions and the learned split prior.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from course_lib.flows.dequantization import LogitTransform
from course_lib.flows.layers import (
    ActNorm,
    AffineCoupling,
    FlowSequence,
    Invertible1x1Conv,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)

__all__ = ["ConvNet", "MultiScaleFlow", "standard_normal_log_prob"]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over all but the first dimension: [N] nats."""
    return -0.5 * (z**2 + math.log(2 * math.pi)).flatten(1).sum(1)


class ConvNet(nn.Sequential):
    """The coupling's s, t network (Glow's NN): 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv to 2C channels.

    The last convolution starts at zero, so every coupling starts as the identity map.
    [N, C, H, W] -> [N, 2 * C, H, W] (s_raw and t).
    """

    def __init__(self, channels: int, hidden: int, out_channels: int | None = None):
        out = nn.Conv2d(hidden, out_channels or 2 * channels, 3, padding=1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        super().__init__(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden, hidden, 1), nn.ReLU(), out)


class MultiScaleFlow(nn.Module):
    """The three-level flow of the module docstring.

    Args:
        image_shape: (C, H, W) with H and W divisible by 4, e.g. (1, 28, 28).
        hidden: hidden channels of the coupling networks at each level.
        steps: flow steps (couplings) at each level (K1, K2, K3).
        logit_alpha: the logit transform's alpha (None: no logit, y - 1/2 goes in).
        scale_bound: |s| < scale_bound in every coupling.
    """

    def __init__(self, image_shape=(1, 28, 28), hidden=(32, 64, 64), steps=(4, 4, 4),
                 logit_alpha: float | None = 1e-4, scale_bound: float = 3.0, seed: int = 0):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"MultiScaleFlow squeezes twice, so height and width must be divisible by 4; "
                             f"got {h}x{w} (pad or crop the images)")
        gen = torch.Generator().manual_seed(seed)  # the 1x1 convolutions' starting rotations
        self.image_shape = tuple(image_shape)
        self.pre = LogitTransform(logit_alpha) if logit_alpha is not None else None

        def coupling(ch, hid, mask):
            return AffineCoupling(ConvNet(ch, hid), mask, scale_bound)

        def glow_steps(ch, hh, ww, hid, k):
            layers = []
            for i in range(k):
                mask = channel_mask(ch, hh, ww, i % 2)
                layers += [ActNorm(ch), Invertible1x1Conv(ch, gen), coupling(ch, hid, mask)]
            return layers

        level1 = []
        for i in range(steps[0]):
            level1 += [ActNorm(c), coupling(c, hidden[0], checkerboard_mask(c, h, w, i % 2))]
        self.level1 = FlowSequence(*level1)
        self.level2 = FlowSequence(Squeeze(), *glow_steps(4 * c, h // 2, w // 2, hidden[1], steps[1]))
        # Glow's learned prior for the factored-out half: an affine coupling conditioned on the kept half
        self.split_prior = AffineCoupling(ConvNet(4 * c, hidden[1]),
                                          channel_mask(4 * c, h // 2, w // 2), scale_bound)
        self.level3 = FlowSequence(Squeeze(), *glow_steps(8 * c, h // 4, w // 4, hidden[2], steps[2]))
        self.latent_shapes = [(2 * c, h // 2, w // 2), (8 * c, h // 4, w // 4)]  # z_1, z_2

    def _split(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h [N, 4C, .] -> (kept [N, 2C, .], z_1 [N, 2C, .], log_det [N])."""
        h, log_det = self.split_prior(h)
        kept, z1 = h.chunk(2, dim=1)
        return kept, z1, log_det

    def forward(self, y: Tensor) -> tuple[list[Tensor], Tensor]:
        """y [N, C, H, W] in [0, 1] -> ([z_1, z_2], log_det [N])."""
        h, log_det = self.pre(y) if self.pre is not None else (y - 0.5, y.new_zeros(y.shape[0]))
        h, ld1 = self.level1(h)
        h, ld2 = self.level2(h)
        h, z1, ld_split = self._split(h)
        z2, ld3 = self.level3(h)
        return [z1, z2], log_det + ld1 + ld2 + ld_split + ld3

    def inverse(self, zs: list[Tensor]) -> Tensor:
        """[z_1, z_2] -> y [N, C, H, W]."""
        z1, z2 = zs
        h = self.level3.inverse(z2)
        h = self.split_prior.inverse(torch.cat([h, z1], dim=1))
        h = self.level1.inverse(self.level2.inverse(h))
        return self.pre.inverse(h) if self.pre is not None else h + 0.5

    def log_prob(self, y: Tensor) -> Tensor:
        """log p(y) in nats [N]: prior of every latent + log_det."""
        zs, log_det = self(y)
        return sum(standard_normal_log_prob(z) for z in zs) + log_det

    @torch.no_grad()
    def data_init(self, y: Tensor) -> None:
        """Initialise every ActNorm on the batch y (its own input, layer by layer)."""
        h = self.pre(y)[0] if self.pre is not None else y - 0.5
        h = self.level2.data_init(self.level1.data_init(h))
        self.level3.data_init(self._split(h)[0])

    def sample_latents(self, n: int, temperature: float = 1.0, device=None) -> list[Tensor]:
        """Draws from N(0, temperature^2 I) in every latent's shape."""
        device = device or next(self.parameters()).device
        return [temperature * torch.randn(n, *shape, device=device) for shape in self.latent_shapes]
