"""Checking and converting sample tensors before they are scored.

Every metric accepts images as uint8 {0..255}, float in [0, 1] or float in [-1, 1] and converts
them to the classifier's input range [-1, 1]. The range is inferred from dtype and values unless
``value_range=`` says it, and the choice is returned (``"uint8"``, ``"[0,1]"`` or ``"[-1,1]"``)
so that it appears in every result dict.
"""
from __future__ import annotations

import torch

__all__ = ["VALUE_RANGES", "infer_value_range", "to_classifier_input", "check_finite"]

VALUE_RANGES = ("uint8", "[0,1]", "[-1,1]")
_TOL = 1e-3  # samplers overshoot slightly; anything further out is a bug, not rounding.


def check_finite(x: torch.Tensor, name: str = "samples") -> None:
    """Raise if ``x`` holds NaN or inf (a diverged sampler), saying how many and what to do."""
    if x.is_floating_point():
        bad = (~torch.isfinite(x)).flatten(1).any(1) if x.dim() > 1 else ~torch.isfinite(x)
        if bad.any():
            raise ValueError(
                f"{name}: {int(bad.sum())} of {x.shape[0]} images contain NaN or inf values (the sampler or "
                "training diverged). Fix the model, or drop them explicitly with "
                "x = x[torch.isfinite(x).flatten(1).all(1)] and report how many you dropped.")


def infer_value_range(x: torch.Tensor) -> str:
    """``"uint8"`` for integer dtypes, else ``"[-1,1]"`` if any value is negative, else ``"[0,1]"``."""
    if not x.is_floating_point():
        return "uint8"
    lo, hi = x.min().item(), x.max().item()
    if lo < -1 - _TOL or hi > 1 + _TOL:
        raise ValueError(
            f"float images with values in [{lo:.3g}, {hi:.3g}] fit neither [0, 1] nor [-1, 1]. "
            "Pass uint8 pixels, or rescale (e.g. x / 255), or say the range with value_range=.")
    return "[-1,1]" if lo < 0 else "[0,1]"


def to_classifier_input(x: torch.Tensor, value_range: str | None = None, name: str = "samples",
                        image_shape: tuple[int, int, int] = (1, 28, 28)) -> tuple[torch.Tensor, str]:
    """Validate ``x`` [N, C, H, W] and return (float32 in [-1, 1], the value range assumed)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, C, H, W], got {type(x).__name__}.")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        hint = ""
        if x.dim() == 3 and tuple(x.shape[1:]) == tuple(image_shape[1:]):
            hint = " Add the channel axis with x.unsqueeze(1)."
        elif x.dim() == 4 and x.shape[1] != image_shape[0]:
            hint = (f" The classifier expects {image_shape[0]} channel(s); this metric is for MNIST-like "
                    "28x28 grey images (convert RGB with x.mean(1, keepdim=True) only if that is meaningful).")
        raise ValueError(f"{name} has shape {tuple(x.shape)} but the MNIST classifier needs "
                         f"[N, {', '.join(map(str, image_shape))}].{hint}")
    check_finite(x, name)
    if value_range is None:
        value_range = infer_value_range(x)
    if value_range not in VALUE_RANGES:
        raise ValueError(f"value_range={value_range!r}; use one of {VALUE_RANGES}.")
    x = x.float()
    if value_range == "uint8":
        x = x / 127.5 - 1
    elif value_range == "[0,1]":
        x = x * 2 - 1
    return x.clamp(-1, 1), value_range
