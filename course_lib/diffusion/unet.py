"""A small U-Net eps_theta(x_t, t, y) for 28x28 and 32x32 images (notebook 06, section "The network").

The lecture only asks for "an image-to-image network"; the U-Net is the usual choice: an
encoder that halves the resolution (28 -> 14 -> 7, or 32 -> 16 -> 8), a middle block with
self-attention at the lowest resolution, and a decoder that doubles it back, concatenating
the encoder's feature maps of the same size (skip connections). Every residual block gets the
time step through a sinusoidal embedding followed by an MLP; a class label, if any, is an
embedding added to it. Label ``num_classes`` is reserved as "no label" (for
classifier-free guidance: train with some labels dropped, sample with and without).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from course_lib.nn import ResidualBlock, SelfAttention2d, group_norm, timestep_embedding

__all__ = ["UNetConfig", "UNet"]


@dataclass
class UNetConfig:
    in_channels: int = 1  # 1 for MNIST, 3 for CIFAR-10
    out_channels: int | None = None  # None: as many as in_channels (more inputs: a condition image)
    base_channels: int = 16  # channels at full resolution; sets the width of the whole network
    channel_mults: tuple[int, ...] = (1, 2, 2)  # channels of each level = base * mult; len - 1 halvings
    num_res_blocks: int = 1  # residual blocks per level in the encoder (the decoder has one more)
    num_heads: int = 1  # attention heads in the middle block
    dropout: float = 0.0  # inside residual blocks (0.1 helps against overfitting on CIFAR-10)
    num_classes: int | None = None  # None: unconditional; else labels 0..num_classes-1 (+ one "no label")


class UNet(nn.Module):
    """eps_theta(x_t, t, y): [N, C, H, W], [N] int times, optional [N] labels -> [N, C_out, H, W].

    H and W must be divisible by 2^(len(channel_mults) - 1), e.g. by 4 for three levels.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        ch = c.base_channels
        self.emb_dim = emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = None if c.num_classes is None else nn.Embedding(c.num_classes + 1, emb_dim)

        self.stem = nn.Conv2d(c.in_channels, ch, 3, padding=1)
        # encoder: at each level num_res_blocks blocks, then a stride-2 conv (except the last level)
        self.down = nn.ModuleList()
        skip_channels = [ch]  # channels of every feature map the decoder will concatenate
        for level, mult in enumerate(c.channel_mults):
            for _ in range(c.num_res_blocks):
                self.down.append(ResidualBlock(ch, c.base_channels * mult, emb_dim, c.dropout))
                ch = c.base_channels * mult
                skip_channels.append(ch)
            if level < len(c.channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # halve H, W
                skip_channels.append(ch)
        self.mid1 = ResidualBlock(ch, ch, emb_dim, c.dropout)
        self.mid_attn = SelfAttention2d(ch, c.num_heads)
        self.mid2 = ResidualBlock(ch, ch, emb_dim, c.dropout)
        # decoder: at each level num_res_blocks + 1 blocks, each eating one skip, then upsample
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mults))):
            for _ in range(c.num_res_blocks + 1):
                in_ch = ch + skip_channels.pop()  # concatenated with the encoder's feature map
                self.up.append(ResidualBlock(in_ch, c.base_channels * mult, emb_dim, c.dropout))
                ch = c.base_channels * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))  # double H, W
        out_channels = c.in_channels if c.out_channels is None else c.out_channels
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        """Time (and class) embedding: MLP(sinusoidal(t)) + class_emb(y): [N] -> [N, 4 * base_channels]."""
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))  # (N, emb_dim)
        if self.class_emb is not None:
            if y is None:  # unconditional: the reserved "no label" index
                y = torch.full_like(t, self.config.num_classes, dtype=torch.long)
            emb = emb + self.class_emb(y)
        elif y is not None:
            raise ValueError("this U-Net was built without classes (num_classes=None) but got labels y; "
                             "build it with num_classes=... or pass y=None.")
        return emb

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        factor = 2 ** (len(self.config.channel_mults) - 1)
        channels = self.config.in_channels
        if x.dim() != 4 or x.shape[1] != channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"expected images [N, {channels}, H, W] with H, W divisible by {factor}, "
                             f"got {list(x.shape)}; pad the images or use fewer channel_mults.")
        emb = self.embed(t, y)  # (N, E)
        h = self.stem(x)  # (N, base, H, W)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResidualBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (N, C_low, H / factor, W / factor)
        for layer in self.up:
            if isinstance(layer, ResidualBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)  # (N, C_out, H, W)
