"""Building blocks shared by the networks of the course (U-Net of the diffusion notebooks, ...).

* ``timestep_embedding``: sinusoidal features of a time step, as the positional encoding of
  the Transformer (the lectures: "sinusoidal positional embeddings" for the step t).
* ``ResidualBlock``: GroupNorm -> SiLU -> conv, plus the time(+class) embedding added to
  every channel, -> GroupNorm -> SiLU -> dropout -> conv, with a skip connection.
* ``SelfAttention2d``: multi-head self-attention over the H*W positions of a feature map.
* ``mean_flat`` / ``sum_flat``: reduce all but the batch dimension ([N, ...] -> [N]).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["timestep_embedding", "ResidualBlock", "SelfAttention2d", "mean_flat", "sum_flat", "group_norm"]


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension except the first: [N, ...] -> [N]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def sum_flat(x: Tensor) -> Tensor:
    """Sum over every dimension except the first: [N, ...] -> [N]."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (integer or real) time steps: [N] -> [N, dim].

    With half = dim // 2 frequencies omega_i = max_period^(-i / half), i = 0..half-1:

        emb(t) = [sin(omega_0 t), ..., sin(omega_{half-1} t), cos(omega_0 t), ..., cos(omega_{half-1} t)]

    These are the Transformer's positional encodings with the sin and cos entries grouped
    rather than interleaved. Nearby t get similar vectors, and every t a distinct one.
    """
    if dim % 2:
        raise ValueError(f"timestep_embedding needs an even dim (got {dim}).")
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * omega[None, :]  # (N, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (N, dim)


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest number of groups <= max_groups that divides ``channels``."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResidualBlock(nn.Module):
    """x + F(x, emb): two 3x3 convolutions, the embedding injected as a per-channel shift.

        h = conv1(SiLU(GroupNorm(x))) + Linear(SiLU(emb))[:, :, None, None]
        out = skip(x) + conv2(dropout(SiLU(GroupNorm(h))))

    ``skip`` is the identity, or a 1x1 convolution when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, C_out, H, W)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]  # same shift at every pixel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (N, C_out, H, W)
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """x + proj(Attention(q, k, v)) over the H*W positions, after GroupNorm.

    With q, k, v = 1x1 convolutions of the normalised input split into ``num_heads`` heads of
    size d: Attention = softmax(q k^T / sqrt(d)) v, independently per head.
    """

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads}).")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # each (N, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, HW, d)
        out = out.transpose(-1, -2).reshape(n, c, h, w)  # (N, C, H, W)
        return x + self.proj(out)
