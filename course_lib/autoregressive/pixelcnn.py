"""The networks f_theta: image -> logits of every pixel's conditional (notebook 02, sections "PixelCNN" and "Gated").

Both map the network input x [N, C, H, W] (pixel levels scaled to [-1, 1]) to logits
[N, C, K, H, W] over K levels (or, with ``mixtures=M``, the 3M parameters [N, C, 3M, H, W] of a
discretized logistic mixture), where the outputs at pixel t and channel c depend only on the pixels
before t in raster order and on the channels before c at pixel t (tests/test_autoregressive_causality.py).

* ``PixelCNN`` (van den Oord et al. 2016, "Pixel Recurrent Neural Networks"): a type-A k x k masked
  convolution, then residual ELU blocks of type-B 3 x 3 masked convolutions. Stacking raster masks
  leaves a **blind spot**: pixels up and to the right that no path of kernel offsets reaches.
* ``GatedPixelCNN`` (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
  Decoders"): a vertical stack (rows above, every column) and a horizontal stack (the current row,
  left of the pixel), joined by a 1x1 link from vertical to horizontal only; gated units
  y = tanh(W_f * x) * sigmoid(W_g * x); an optional class label enters every gate as a bias.
  Its receptive field has no blind spot.

Both nets also evaluate one pixel at a time for sampling (``begin_row`` / ``pixel_logits``),
computing only what that pixel's receptive field needs; see ``course_lib.autoregressive.model``.
Activations are ELU and tanh/sigmoid, never ReLU: their gradients are never exactly zero, so a zero
input gradient (``checks.dependence``) always means "no path", never "a dead unit".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.autoregressive.masks import (
    MaskedConv2d,
    channel_groups,
    horizontal_mask,
    raster_mask,
    vertical_mask,
)

__all__ = ["GatedPixelCNN", "OutputHead", "PixelCNN", "PixelCNNConfig"]


@dataclass
class PixelCNNConfig:
    in_channels: int = 1              # C: 1 (grey) or 3 (RGB, ordered R -> G -> B within a pixel)
    levels: int = 256                 # K: values per channel (256 for 8 bits, 2 for binary images)
    hidden: int = 64                  # F: feature channels (a multiple of C)
    layers: int = 6                   # masked layers after the first (type-A) one
    first_kernel: int = 7             # k of the type-A layer
    kernel: int = 3                   # k of the later layers
    dilations: tuple[int, ...] = (1,)  # dilation of later layer l is dilations[l % len(dilations)]
    num_classes: int | None = None    # class-conditional if set: the label enters every layer as a bias
    mixtures: int | None = None       # None: a K-way softmax per channel; M: a discretized logistic mixture

    @property
    def outputs(self) -> int:
        """P, the head's numbers per channel: K logits, or 3M mixture parameters (``logistic``)."""
        return self.levels if self.mixtures is None else 3 * self.mixtures


class OutputHead(nn.Module):
    """ELU -> 1x1 type-B -> ELU -> 1x1 type-B: features [N, F, H, W] -> outputs [N, C, P, H, W].

    Output channel c * P + p holds number p of colour channel c (group c): the logit of level p
    (P = K), or mixture parameter p (P = 3M, see ``course_lib.autoregressive.logistic``)."""

    def __init__(self, cfg: PixelCNNConfig):
        super().__init__()
        C, P, Fh = cfg.in_channels, cfg.outputs, cfg.hidden
        self.C, self.P = C, P
        self.hidden = MaskedConv2d(raster_mask(1, "B", Fh, Fh, C))
        self.out = MaskedConv2d(raster_mask(1, "B", Fh, C * P, C))

    def forward(self, h: Tensor) -> Tensor:
        out = self.out(F.elu(self.hidden(F.elu(h))))                   # [N, C*P, H, W]
        return out.view(out.shape[0], self.C, self.P, *out.shape[2:])


def _check(cfg: PixelCNNConfig) -> None:
    if cfg.hidden % cfg.in_channels:
        raise ValueError(f"hidden={cfg.hidden} must be a multiple of in_channels={cfg.in_channels} "
                         "(each colour channel gets an equal block of features)")
    if cfg.levels < 2:
        raise ValueError(f"levels must be at least 2, got {cfg.levels}")
    if cfg.mixtures is not None and cfg.mixtures < 1:
        raise ValueError(f"mixtures must be None (a K-way softmax) or at least 1 component, got {cfg.mixtures}")


def _dilation(cfg: PixelCNNConfig, layer: int) -> int:
    return cfg.dilations[layer % len(cfg.dilations)]


class PixelCNN(nn.Module):
    """Naive PixelCNN: raster-masked convolutions only (it has the blind spot)."""

    def __init__(self, cfg: PixelCNNConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        C, Fh = cfg.in_channels, cfg.hidden
        self.first = MaskedConv2d(raster_mask(cfg.first_kernel, "A", C, Fh, C))
        self.convs = nn.ModuleList(
            MaskedConv2d(raster_mask(cfg.kernel, "B", Fh, Fh, C), dilation=_dilation(cfg, l))
            for l in range(cfg.layers))
        self.cond = nn.Embedding(cfg.num_classes, Fh * (cfg.layers + 1)) if cfg.num_classes else None
        self.head = OutputHead(cfg)
        # rows above pixel t that can influence it (for cropping in pixel_logits)
        self.reach = cfg.first_kernel // 2 + sum(cfg.kernel // 2 * _dilation(cfg, l) for l in range(cfg.layers))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x [N, C, H, W] in [-1, 1] -> outputs [N, C, P, H, W] (P = K logits or 3M mixture parameters)."""
        cond = _label_bias(self.cond, y, x, self.cfg.layers + 1)
        h = self.first(x) + cond[0]                                     # [N, F, H, W]
        for conv, c in zip(self.convs, cond[1:]):
            h = h + conv(F.elu(h)) + c                                  # residual masked block
        return self.head(h)

    # --- sampling: pixel (i, j) needs rows i - reach .. i only ---
    def begin_row(self, x: Tensor, y: Tensor | None = None) -> dict:
        """x [N, C, i+1, W]: rows 0..i (row i may be partly filled). State for the pixels of row i."""
        return {"above": x[:, :, max(0, x.shape[2] - 1 - self.reach):-1], "y": y}

    def pixel_logits(self, state: dict, row: Tensor, j: int) -> Tensor:
        """row [N, C, 1, W]: the current row (pixels < j filled) -> outputs of pixel (i, j): [N, C, P]."""
        x = torch.cat([state["above"], row], dim=2)                     # [N, C, <=reach+1, W]
        return self.forward(x, state["y"])[:, :, :, -1, j]


class GatedLayer(nn.Module):
    """One gated layer: vertical and horizontal stacks, tanh x sigmoid gates, link v -> h only.

    v_pre = W_v * v (+ V_v y);             v_out = tanh(v_pre[:F]) * sigmoid(v_pre[F:])
    h_pre = W_h * h + W_link v_pre (+ V_h y);  h_out = h + W_1x1 (tanh(h_pre[:F]) * sigmoid(h_pre[F:]))
    (no residual in the first layer, whose input is the image).
    """

    def __init__(self, c_in: int, cfg: PixelCNNConfig, kernel: int, mask_type: str, dilation: int):
        super().__init__()
        Fh, G, k, d = cfg.hidden, cfg.in_channels, kernel, dilation
        g_in = channel_groups(c_in, G)
        g_gate = channel_groups(Fh, G).repeat(2)   # 2F channels = [tanh half, sigmoid half], each in groups
        self.v_conv = MaskedConv2d(vertical_mask(k, mask_type, c_in, 2 * Fh),
                                   padding=(k // 2 * d, k // 2 * d, k // 2 * d, 0), dilation=d)
        self.h_conv = MaskedConv2d(horizontal_mask(k, mask_type, c_in, 2 * Fh, in_groups=g_in, out_groups=g_gate),
                                   padding=(k // 2 * d, 0, 0, 0), dilation=d)
        self.link = nn.Conv2d(2 * Fh, 2 * Fh, 1)   # vertical never sees row i, so no mask is needed
        self.h_out = MaskedConv2d(raster_mask(1, "B", Fh, Fh, G))
        self.residual = mask_type == "B"

    @staticmethod
    def gate(pre: Tensor) -> Tensor:  # [N, 2F, H, W] -> [N, F, H, W]
        a, b = pre.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def vertical(self, v: Tensor, cond_v: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """v [N, c_in, H, W] -> (v_pre [N, 2F, H, W], v_out [N, F, H, W])."""
        v_pre = self.v_conv(v) + cond_v
        return v_pre, self.gate(v_pre)

    def horizontal(self, h: Tensor, v_pre: Tensor, cond_h: Tensor | float = 0.0) -> Tensor:
        """h [N, c_in, H, W'], v_pre [N, 2F, H, W'] (same columns) -> h_out [N, F, H, W']."""
        out = self.h_out(self.gate(self.h_conv(h) + self.link(v_pre) + cond_h))
        return h + out if self.residual else out


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN: a type-A gated layer on the image, then ``layers`` type-B gated layers, then the head."""

    def __init__(self, cfg: PixelCNNConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        C, Fh = cfg.in_channels, cfg.hidden
        self.layers = nn.ModuleList([GatedLayer(C, cfg, cfg.first_kernel, "A", 1)] + [
            GatedLayer(Fh, cfg, cfg.kernel, "B", _dilation(cfg, l)) for l in range(cfg.layers)])
        n = len(self.layers)
        self.cond = nn.Embedding(cfg.num_classes, 4 * Fh * n) if cfg.num_classes else None
        self.head = OutputHead(cfg)
        reach = cfg.first_kernel // 2 + sum(cfg.kernel // 2 * _dilation(cfg, l) for l in range(cfg.layers))
        self.reach_up, self.reach_left = reach, reach  # rows above / columns left that can matter

    def _conds(self, y: Tensor | None, x: Tensor) -> list[tuple]:
        biases = _label_bias(self.cond, y, x, 2 * len(self.layers))  # per layer: (v, h), each [N, 2F, 1, 1]
        return list(zip(biases[0::2], biases[1::2]))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x [N, C, H, W] in [-1, 1] -> outputs [N, C, P, H, W] (P = K logits or 3M mixture parameters)."""
        v = h = x
        for layer, (cond_v, cond_h) in zip(self.layers, self._conds(y, x)):
            v_pre, v_next = layer.vertical(v, cond_v)
            h = layer.horizontal(h, v_pre, cond_h)
            v = v_next
        return self.head(h)

    # --- sampling: the vertical stack once per row, the horizontal stack per pixel on a few columns ---
    def begin_row(self, x: Tensor, y: Tensor | None = None) -> dict:
        """x [N, C, i+1, W]: rows 0..i. Runs the vertical stack on rows i - reach_up .. i and keeps each
        layer's v_pre of row i ([N, 2F, 1, W]); it does not depend on row i, which may be partly filled."""
        v = x[:, :, max(0, x.shape[2] - 1 - self.reach_up):]
        conds, v_pres = self._conds(y, x), []
        for layer, (cond_v, _) in zip(self.layers, conds):
            v_pre, v = layer.vertical(v, cond_v)
            v_pres.append(v_pre[:, :, -1:])
        return {"v_pre": v_pres, "cond_h": [c for _, c in conds]}

    def pixel_logits(self, state: dict, row: Tensor, j: int) -> Tensor:
        """row [N, C, 1, W] (pixels < j filled) -> outputs of pixel (i, j) [N, C, P]: the horizontal stack
        on columns j - reach_left .. j only."""
        cols = slice(max(0, j - self.reach_left), j + 1)
        h = row[..., cols]
        for layer, v_pre, cond_h in zip(self.layers, state["v_pre"], state["cond_h"]):
            h = layer.horizontal(h, v_pre[..., cols], cond_h)
        return self.head(h[..., -1:])[:, :, :, 0, 0]


def _label_bias(embedding: nn.Embedding | None, y: Tensor | None, x: Tensor, parts: int) -> list:
    """The label's per-layer biases [N, channels, 1, 1] (``parts`` of them), or zeros without a label."""
    if embedding is None:
        if y is not None:
            raise ValueError("this PixelCNN is unconditional (num_classes=None) but got labels y; "
                         "build it with num_classes=... or pass y=None")
        return [0.0] * parts
    if y is None:
        raise ValueError("this PixelCNN is class-conditional: pass labels y (int64 [N]) to forward/sample")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels y must have shape [N] = [{x.shape[0]}], got {tuple(y.shape)}")
    return [b[:, :, None, None] for b in embedding(y).chunk(parts, dim=1)]
