"""``AutoregressiveImageModel``: a PixelCNN under the training contract (notebook 02, sections "Training" and "Sampling").

The chain rule over pixels in raster order (channels R -> G -> B within a pixel)::

    log p(x) = sum_{t=1}^{D} log p(x_t | x_<t),   D = C * H * W,

each factor a K-way categorical (softmax of the net's logits) or, with ``mixtures=M``, a
discretized logistic mixture (``course_lib.autoregressive.logistic``, PixelCNN++). Training minimises
the NLL, the cross-entropy of the conditionals with the pixel values themselves; all D conditionals
of an image come out of one network pass, because the masks keep output t blind to x_t, x_{t+1}, ...

Shapes and ranges:

* stored images: uint8 [N, C, H, W] in 0..255;
* ``preprocess`` -> **levels**: int64 [N, C, H, W] in 0..K-1 (K = 2^bits; bits=8 keeps the values,
  fewer bits keep the top bits as ``quantize`` does); levels are both the targets and, scaled to
  [-1, 1] by ``net_input``, what the network sees;
* ``log_prob`` -> [N] nats (of the K-level image); ``loss`` -> mean NLL in nats per dimension, plus
  bits/dim (``nll_of="discrete"`` in ``course_lib.evaluate.bits_per_dim``: a probability of integers);
* ``sample`` / ``complete`` -> levels; ``postprocess`` -> uint8 images for showing and scoring.

Sampling draws pixel by pixel (D sequential draws), batched over images. Per row the net's
``begin_row`` computes what does not depend on that row (the gated net's vertical stack; the
naive net just crops the rows that can matter), then ``pixel_logits`` evaluates only the columns
the next pixel's receptive field needs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib.autoregressive.logistic import logistic_mixture_log_prob, logistic_mixture_table
from course_lib.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN, PixelCNNConfig
from course_lib.contract import GenerativeModel
from course_lib.evaluate.bpd import bits_per_dim

__all__ = ["AutoregressiveImageModel", "build_pixelcnn"]


class AutoregressiveImageModel(GenerativeModel):
    """A K-level autoregressive model of images around a masked network ``net``.

    ``net(x, y) -> outputs [N, C, P, H, W]`` (``PixelCNN`` or ``GatedPixelCNN``): P = K logits, or
    3M mixture parameters when ``net.cfg.mixtures = M``; ``bits`` = log2 K.
    """

    def __init__(self, net: PixelCNN | GatedPixelCNN, image_shape: tuple[int, int, int], bits: int = 8,
                 label_dropout: float = 0.0):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        if not 1 <= bits <= 8 or 2 ** bits != net.cfg.levels or image_shape[0] != net.cfg.in_channels:
            raise ValueError(f"net (levels={net.cfg.levels}, in_channels={net.cfg.in_channels}) does not fit "
                             f"bits={bits} and image_shape={image_shape}: need levels = 2**bits, in_channels = C")
        if label_dropout and not (0 < label_dropout < 1 and net.cfg.num_classes):
            raise ValueError(f"label_dropout={label_dropout} needs a class-conditional net and 0 < label_dropout < 1")
        self.net, self.image_shape, self.bits, self.levels = net, tuple(image_shape), bits, 2 ** bits
        # with label dropout the net's last class is "no label": p(x) = p(x | no label)
        self.label_dropout = label_dropout
        self.num_classes = None if net.cfg.num_classes is None else net.cfg.num_classes - bool(label_dropout)

    # --- data ---
    def preprocess(self, x: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> levels int64 [N, C, H, W] in 0..K-1 (top ``bits`` bits)."""
        if x.dtype != torch.uint8:
            raise TypeError(f"{type(self).__name__} models 8-bit images: expected uint8 pixels 0..255, got "
                            f"{x.dtype}; pass images as load_dataset returns them")
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"images of shape {tuple(x.shape[1:])}, but the model was built for {self.image_shape}")
        return (x >> (8 - self.bits)).long()

    def net_input(self, levels: Tensor) -> Tensor:
        """levels 0..K-1 -> float in [-1, 1]: 2 * levels / (K - 1) - 1."""
        return levels.float() * (2.0 / (self.levels - 1)) - 1.0

    def postprocess(self, levels: Tensor) -> Tensor:
        """levels -> uint8 images: round(levels * 255 / (K - 1)) (the identity for 8 bits)."""
        return (levels.float() * (255.0 / (self.levels - 1))).round().to(torch.uint8)

    # --- likelihood ---
    def labels(self, y: Tensor | None, n: int, device) -> Tensor | None:
        """The labels the net gets: y, or the "no label" class for y=None when trained with label dropout."""
        if y is None and self.label_dropout:
            return torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        top = None if self.num_classes is None else self.num_classes - 1 + bool(self.label_dropout)
        if y is not None and top is not None and not ((0 <= y) & (y <= top)).all():
            extra = f" ({top} = no label)" if self.label_dropout else ""
            raise ValueError(f"labels must lie in 0..{top}{extra}, got {y.min().item()}..{y.max().item()}")
        return y

    def level_logits(self, out: Tensor) -> Tensor:
        """The net's outputs [..., P] -> logits [..., K] of the levels (log-probabilities for a mixture)."""
        return out if self.net.cfg.mixtures is None else logistic_mixture_table(out, self.levels)

    def logits(self, levels: Tensor, y: Tensor | None = None) -> Tensor:
        """levels [N, C, H, W] -> logits [N, C, K, H, W] of p(x_t = k | x_<t) for every t at once."""
        out = self.net(self.net_input(levels), self.labels(y, levels.shape[0], levels.device))
        return self.level_logits(out.movedim(2, -1)).movedim(-1, 2)

    def nll(self, levels: Tensor, y: Tensor | None = None) -> Tensor:
        """-log p(x) = -sum_t log p(x_t | x_<t) in nats: levels [N, C, H, W] -> [N]."""
        out = self.net(self.net_input(levels), self.labels(y, levels.shape[0], levels.device))
        if self.net.cfg.mixtures is None:                                # out: logits [N, C, K, H, W]
            nll = F.cross_entropy(out.transpose(1, 2), levels, reduction="none")  # classes in dim 1
        else:                                                            # out: parameters [N, C, 3M, H, W]
            nll = -logistic_mixture_log_prob(out, levels, self.levels)
        return nll.flatten(1).sum(1)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """x = levels (preprocessed). "loss" = mean NLL in nats per dimension; also "bpd" = loss / ln 2.
        With label dropout, training replaces each label by "no label" with that probability."""
        if self.training and self.label_dropout and y is not None:
            drop = torch.rand(y.shape, device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        nats_per_dim = self.nll(x, y).mean() / x[0].numel()
        return {"loss": nats_per_dim, "bpd": nats_per_dim.detach() / math.log(2.0)}

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) in nats of uint8 images x [N, C, H, W] (of their top ``bits`` bits): [N]."""
        return -self.nll(self.preprocess(x), y)

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, y: Tensor | None = None, batch_size: int = 500) -> Tensor:
        """Bits per dimension of uint8 images x [N, C, H, W] (any N; evaluated in batches on the model's device): [N]."""
        device = self.device
        nll = torch.cat([self.nll(self.preprocess(x[s:s + batch_size].to(device)),
                                  None if y is None else y[s:s + batch_size].to(device)).cpu()
                         for s in range(0, x.shape[0], batch_size)])
        return bits_per_dim(nll, x, nll_of="discrete")

    @torch.no_grad()
    def data_init(self, x: Tensor, y: Tensor | None = None) -> None:
        """Start the output bias at the log-frequency of each level in the first batch (add-one smoothed):
        the untrained model then predicts the pixel marginal, not a uniform 8 bits/dim. ``fit`` calls it.
        A mixture starts with equal weights, means spread evenly over [-1, 1] and scales of their spacing."""
        if self.net.cfg.mixtures is not None:
            M = self.net.cfg.mixtures
            spacing = 2.0 / M
            start = torch.cat([torch.zeros(M), torch.linspace(-1 + spacing / 2, 1 - spacing / 2, M),
                               torch.full((M,), math.log(spacing))])
            self.net.head.out.bias.copy_(start.repeat(x.shape[1]))
            return
        counts = torch.stack([torch.bincount(x[:, c].flatten(), minlength=self.levels) for c in range(x.shape[1])])
        log_freq = (counts.float() + 1.0).log() - (counts.float() + 1.0).sum(1, keepdim=True).log()  # [C, K]
        self.net.head.out.bias.copy_(log_freq.flatten())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- sampling ---
    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, *, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """n images drawn pixel by pixel: levels int64 [n, C, H, W] on the model's device."""
        blank = torch.zeros(n, *self.image_shape, dtype=torch.uint8, device=self.device)
        return self.complete(blank, 0, y, temperature=temperature, generator=generator)

    @torch.no_grad()
    def complete(self, x: Tensor, n_given: int, y: Tensor | None = None, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Keep the first ``n_given`` pixels of uint8 images x [N, C, H, W] (raster order, all channels of a
        pixel) and draw the rest from p(x_t | x_<t): levels int64 [N, C, H, W]. ``n_given = H * W // 2``
        completes the lower half. Only pixels before t are given: an AR model conditions on a prefix."""
        C, H, W = self.image_shape
        if not 0 <= n_given <= H * W:
            raise ValueError(f"n_given must be between 0 and H * W = {H * W} pixels, got {n_given}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if (y is None and self.num_classes is not None and not self.label_dropout) or (
                y is not None and self.num_classes is None):
            raise ValueError("pass labels y (int64 [N]) exactly when the model is class-conditional "
                             f"(num_classes={self.num_classes}, trained without label dropout)")
        was_training = self.training
        self.eval()
        levels = self.preprocess(x.to(self.device)).clone()               # [N, C, H, W]
        y = self.labels(y, levels.shape[0], levels.device)
        inp = self.net_input(levels)                                      # what the net sees, kept in step
        for i in range(n_given // W, H):
            state = self.net.begin_row(inp[:, :, :i + 1], y)              # what does not depend on row i
            for j in range(max(0, n_given - i * W), W):
                for c in range(C):                                        # R -> G -> B within the pixel
                    logits = self.level_logits(self.net.pixel_logits(state, inp[:, :, i:i + 1], j)[:, c])  # [N, K]
                    probs = torch.softmax(logits / temperature, dim=-1)
                    levels[:, c, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
                    inp[:, c, i, j] = self.net_input(levels[:, c, i, j])
        self.train(was_training)
        return levels


def build_pixelcnn(image_shape: tuple[int, int, int], num_classes: int | None = None, *, gated: bool = True,
                   bits: int = 8, hidden: int = 64, layers: int = 6, first_kernel: int = 7, kernel: int = 3,
                   dilations: tuple[int, ...] = (1,), mixtures: int | None = None,
                   label_dropout: float = 0.0) -> AutoregressiveImageModel:
    """Model-zoo builder (``python -m course_lib train --model pixelcnn``): a gated (default) or naive PixelCNN
    with a 2**bits-way categorical per channel, or with ``mixtures=M`` a discretized logistic mixture of
    M components; options are ``PixelCNNConfig`` fields.

    ``label_dropout`` (class-conditional models): the share of training labels replaced by an extra
    "no label" class, so that one model gives p(x | y) and, with y=None, p(x)."""
    cfg = PixelCNNConfig(in_channels=image_shape[0], levels=2 ** bits, hidden=hidden, layers=layers,
                         first_kernel=first_kernel, kernel=kernel, dilations=tuple(dilations), mixtures=mixtures,
                         num_classes=None if num_classes is None else num_classes + bool(label_dropout))
    net = GatedPixelCNN(cfg) if gated else PixelCNN(cfg)
    return AutoregressiveImageModel(net, image_shape, bits=bits, label_dropout=label_dropout)
