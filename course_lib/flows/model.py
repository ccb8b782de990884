"""``FlowModel``: the multi-scale flow on 8-bit images, following the training contract (notebook 05).

    model = build_flow((1, 28, 28))
    result = fit(model, x_uint8, steps=2000, batch_size=64, lr=1e-3, ema_decay=0.999)
    bpd = result.ema.bits_per_dim(x_test_uint8)          # [N], the discrete-data convention
    images = result.ema.postprocess(result.ema.sample(16, temperature=0.7))   # uint8

What the contract asks, and the answer here:

* ``preprocess(x)``: uint8 -> y = (x + u) / 256, u ~ U[0, 1) on the device (uniform dequantisation).
  With ``dequantization="variational"`` the loss redraws u from the learned q(u | x) of
  ``course_lib.flows.variational`` and adds log q(u | x) to the NLL (still a bound on the integers).
* ``data_init(y)``: Glow's ActNorm initialisation on the first batch (``fit`` calls it before the EMA copy).
* ``loss(y)``: {"loss": bits/dim, "prior_bpd": -log N(z) part, "log_det_bpd": -log_det part}, where
  bits/dim = (-log p(y) + D log 256) / (D ln 2), the ``"continuous_unit"`` convention of
  ``course_lib.evaluate.bpd``: an upper bound on the bits/dim of the integer pixels.
* ``log_prob(y)``: log p(y) of dequantised y in [0, 1]^D, nats, [N].
* ``sample(n, y=None, temperature=1.0)``: y in [0, 1] from latents drawn from N(0, temperature^2 I).
* ``postprocess(y)``: floor(256 y) clamped to 0..255, as uint8 (the inverse of dequantisation).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from course_lib.contract import GenerativeModel
from course_lib.evaluate.bpd import bits_per_dim
from course_lib.flows.dequantization import BPD_CONVENTION, uniform_dequantize
from course_lib.flows.multiscale import MultiScaleFlow, standard_normal_log_prob
from course_lib.flows.variational import VariationalDequantizer

__all__ = ["FlowModel", "build_flow"]


class FlowModel(GenerativeModel):
    """A normalizing flow on uint8 images: dequantisation + ``MultiScaleFlow`` + N(0, I) prior.

    ``dequantization``: "uniform" (u ~ U[0, 1)) or "variational" (u ~ q(u | x), learned with the flow;
    ``dequantizer_hidden`` channels). ``flow_options`` go to ``MultiScaleFlow``.
    """

    def __init__(self, image_shape=(1, 28, 28), dequantization: str = "uniform", dequantizer_hidden: int = 16,
                 **flow_options):
        super().__init__()
        if dequantization not in ("uniform", "variational"):
            raise ValueError(f"dequantization must be 'uniform' or 'variational', got {dequantization!r}")
        self.image_shape = tuple(image_shape)
        self.flow = MultiScaleFlow(self.image_shape, **flow_options)
        self.dequantizer = (VariationalDequantizer(self.image_shape, dequantizer_hidden)
                            if dequantization == "variational" else None)
        self.num_dims = math.prod(self.image_shape)

    def preprocess(self, x: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> dequantised y in [0, 1); floats (already dequantised) pass unchanged."""
        if x.dtype == torch.uint8:
            return uniform_dequantize(x)
        if x.is_floating_point() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"float input must be dequantised pixels in [0, 1], got values in "
                             f"[{x.min().item():.3g}, {x.max().item():.3g}]; pass the uint8 images instead")
        return x

    def _check(self, y: Tensor) -> None:
        if y.dtype == torch.uint8:
            raise TypeError("FlowModel.log_prob/loss take dequantised floats y in [0, 1]; call "
                            "model.preprocess(x) on uint8 images first (or model.bits_per_dim(x) for the bpd)")
        if tuple(y.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape [N, {', '.join(map(str, self.image_shape))}], "
                             f"got {list(y.shape)}")

    def log_prob(self, y: Tensor) -> Tensor:
        """log p(y) in nats, [N], for dequantised y in [0, 1]^D."""
        self._check(y)
        return self.flow.log_prob(y)

    def _dequantize_again(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Variational dequantisation: y's integers x = floor(256 y) with u redrawn from q(u | x);
        returns (y', log q(u | x) [N]). Uniform: (y, 0)."""
        if self.dequantizer is None:
            return y, torch.zeros(len(y), device=y.device)
        x = (y * 256).floor().clamp(0, 255)
        u, log_q = self.dequantizer(x)
        return (x + u) / 256, log_q

    def loss(self, y: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Bits/dim of the batch (the training objective: maximum likelihood) and its parts:
        bpd = (-log N(z) - log_det + log q(u | x) + D log 256) / (D ln 2), log q = 0 for uniform noise."""
        self._check(y)
        y, log_q = self._dequantize_again(y)
        zs, log_det = self.flow(y)
        prior = sum(standard_normal_log_prob(z) for z in zs)
        scale = 1.0 / (self.num_dims * math.log(2.0))
        bpd = (-(prior + log_det) + log_q + self.num_dims * math.log(256.0)).mean() * scale
        terms = {"loss": bpd, "prior_bpd": -prior.mean() * scale,
                 "log_det_bpd": (-log_det.mean() + self.num_dims * math.log(256.0)) * scale}
        if self.dequantizer is not None:
            terms["log_q_bpd"] = log_q.mean() * scale
        return terms

    @torch.no_grad()
    def data_init(self, y: Tensor, labels: Tensor | None = None) -> None:
        self.flow.data_init(y)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """n images y in [0, 1]: the inverse flow of latents drawn from N(0, temperature^2 I)."""
        if y is not None:
            raise ValueError("FlowModel is unconditional: train and sample it without --conditional labels")
        return self.flow.inverse(self.flow.sample_latents(n, temperature)).clamp(0, 1)

    def postprocess(self, samples: Tensor) -> Tensor:
        """y in [0, 1] -> uint8 pixels floor(256 y), clamped to 0..255."""
        return (samples * 256).floor().clamp(0, 255).to(torch.uint8)

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, batch_size: int = 500, draws: int = 1) -> Tensor:
        """Bits/dim of uint8 images x [N, C, H, W] (the discrete-data bound, each averaged over ``draws``
        dequantisation draws), [N] on the CPU. Uses the model's device."""
        if x.dtype != torch.uint8:
            raise TypeError(f"bits_per_dim expects the uint8 images, got {x.dtype}")
        device = next(self.parameters()).device
        out = []
        for chunk in x.split(batch_size):
            chunk = chunk.to(device)
            nll = torch.stack([self._nll(chunk) for _ in range(draws)]).mean(0)
            out.append(bits_per_dim(nll, chunk, nll_of=BPD_CONVENTION).cpu())
        return torch.cat(out)


    def _nll(self, x: Tensor) -> Tensor:
        """-log p_Y(y) + log q(u | x) for one dequantisation draw of uint8 x: [N] nats (log q = 0 if uniform)."""
        y, log_q = self._dequantize_again(uniform_dequantize(x))
        return -self.log_prob(y) + log_q


def build_flow(image_shape, num_classes=None, **options):
    """Zoo builder ``realnvp``: a ``FlowModel`` for images [C, H, W], a ``RealNVP2D`` for 2D points [2]."""
    if num_classes is not None:
        raise ValueError("the realnvp flow is unconditional; train it without --conditional")
    if len(image_shape) == 1:
        from course_lib.flows.toy2d import RealNVP2D

        return RealNVP2D(dim=image_shape[0], **options)
    if len(image_shape) != 3:
        raise ValueError(f"realnvp needs images [C, H, W] or points [D], got shape {tuple(image_shape)}")
    for key in ("hidden", "steps"):  # from the command line, lists arrive as lists
        if key in options:
            options[key] = tuple(options[key])
    return FlowModel(tuple(image_shape), **options)
