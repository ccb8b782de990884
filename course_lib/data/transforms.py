"""Conversions between stored pixels (uint8, 0..255) and what models consume.

=================  =====================================  ==============================
function           formula                                 used by
=================  =====================================  ==============================
``to_signed``      x / 127.5 - 1            in [-1, 1]     DDPM, GAN, flows on images
``to_unit``        x / 255                  in [0, 1]      Bernoulli/continuous decoders
``to_uint8``       round((v + 1) * 127.5)   back to 0..255 showing / saving samples
``dequantize``     (x + u) / 256, u ~ U[0, 1)  in [0, 1)   likelihood models (bits/dim)
``binarize``       1[x/255 > t] or Bernoulli(x/255)        binary MNIST
``quantize``       floor(x / 2**(8 - bits)) in 0..2**bits-1   n-bit images (Glow's 5 bits)
=================  =====================================  ==============================

``to_uint8(to_signed(x)) == x`` exactly for every uint8 ``x``.
"""
from __future__ import annotations

import torch

__all__ = ["to_signed", "to_unit", "to_uint8", "dequantize", "binarize", "quantize"]

_RESOLUTION = 2**16  # dequantization noise resolution (see dequantize)


def _check_uint8(x: torch.Tensor, fn: str) -> None:
    if x.dtype != torch.uint8:
        raise TypeError(f"{fn} expects uint8 pixels 0..255, got {x.dtype}; load images with load_dataset")


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]: x / 127.5 - 1."""
    _check_uint8(x, "to_signed")
    return x.float() / 127.5 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [0, 1]: x / 255."""
    _check_uint8(x, "to_unit")
    return x.float() / 255.0


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 0..255: round((v + 1) * 127.5), clamped (samples overshoot)."""
    if v.dtype == torch.uint8:
        raise TypeError("to_uint8 expects floats in [-1, 1]; this tensor is already uint8")
    return ((v.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization: y = (x + u) / 256 with u ~ U[0, 1), so y in [0, 1) and floor(256 y) = x.

    A density p(y) on [0, 1)^D then bounds the discrete likelihood: log P(x) >= E_u log p(y) - D log 256.
    u is drawn on a grid of 2**-16 so that x + u is exact in float32 (a float32 u just below 1
    would round 255 + u up to 256 and break floor(256 y) = x).
    """
    _check_uint8(x, "dequantize")
    u = torch.randint(0, _RESOLUTION, x.shape, generator=generator, device="cpu").to(x.device)
    return (x.float() + u.float() / _RESOLUTION) / 256.0


def binarize(x: torch.Tensor, threshold: float = 0.5, *, stochastic: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 pixels -> float32 {0, 1}.

    Deterministic: 1[x / 255 > threshold]. ``stochastic=True``: each pixel ~ Bernoulli(x / 255)
    (the "dynamically binarized MNIST" of the VAE literature; pass ``generator`` to reproduce).
    """
    _check_uint8(x, "binarize")
    p = x.float() / 255.0
    if stochastic:
        return torch.bernoulli(p.cpu(), generator=generator).to(x.device)
    return (p > threshold).float()


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top ``bits`` bits: uint8 0..255 -> uint8 levels 0..2**bits - 1, floor(x / 2**(8 - bits))."""
    _check_uint8(x, "quantize")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be between 1 and 8, got {bits}")
    return x >> (8 - bits)
