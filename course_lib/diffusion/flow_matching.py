"""Flow matching / rectified flow (notebook 08, section 4).

Conditional flow matching (Lipman et al. 2023, "Flow matching for generative modeling") with the
straight path of rectified flow (Liu et al. 2023, "Flow straight and fast: learning to generate and
transfer data with rectified flow"). **Convention: time runs from noise at t = 0 to data at t = 1**
(the reverse of the diffusion lectures, where t = T is noise):

    x0 ~ N(0, I)  (noise),   x1 ~ data,   x_t = (1 - t) x0 + t x1,   t ~ Uniform[0, 1]
    conditional velocity     d x_t / dt = x1 - x0
    CFM loss                 L(theta) = E_{t, x0, x1} || v_theta(x_t, t) - (x1 - x0) ||^2

The loss is a regression, so its minimiser is the conditional mean

    v*(x, t) = E[x1 - x0 | x_t = x],

the *marginal* velocity: the ODE dx/dt = v*(x, t) started from x(0) ~ N(0, I) ends at the data
law at t = 1 (Lipman et al., Theorems 1-2; Liu et al., Theorem 3.3). Sampling solves that ODE
with Euler or Heun steps (``ode.integrate``), counting network evaluations (NFE).

Link to the probability-flow ODE: with Tweedie's formula E[x0 | x_t] = -(1 - t) grad log p_t(x_t),
v*(x, t) = (x + (1 - t) grad log p_t(x)) / t. Flow matching learns that velocity directly, and the
straight conditional paths make it nearly straight, so few steps suffice.

The network is any module called as ``net(x_t, c, y)`` returning a tensor shaped like x_t, with the
time given as c = time_scale * t (default 1000 t: the sinusoidal embeddings of ``UNet`` and
``MLPDenoiser`` were made for DDPM's steps 0..1000 and take real values).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.diffusion.ode import integrate
from course_lib.diffusion.score import _mixture_parts, _mixture_posterior, _per_example
from course_lib.diffusion.toy import MLPDenoiser
from course_lib.diffusion.unet import UNet, UNetConfig
from course_lib.nn import mean_flat

__all__ = ["FlowMatching", "cfm_loss", "mixture_velocity", "build_flow_matching", "image_unet"]


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def cfm_loss(velocity_fn, x1: Tensor, *, t: Tensor | None = None, x0: Tensor | None = None) -> Tensor:
    """The conditional flow-matching loss per example: || v(x_t, t) - (x1 - x0) ||^2 / D.

    x_t = (1 - t) x0 + t x1 with t ~ U[0, 1] [N] and x0 ~ N(0, I) like x1, drawn unless given (pass
    x0 to train on a coupling, e.g. rectified flow's "reflow" pairs). velocity_fn(x_t, t [N]) -> like
    x1. The squared error is averaged over the D coordinates (one scale for points and images).
    Returns [N]; its mean is the training loss.
    """
    t = torch.rand(x1.shape[0], device=x1.device, dtype=x1.dtype) if t is None else t
    x0 = torch.randn_like(x1) if x0 is None else x0
    x_t = (1 - _bcast(t, x1)) * x0 + _bcast(t, x1) * x1
    return mean_flat((velocity_fn(x_t, t) - (x1 - x0)) ** 2)


class FlowMatching(GenerativeModel):
    """A flow-matching model on the training contract: ``loss`` is the CFM loss, ``sample`` solves the ODE.

    net: v_theta, called as ``net(x_t, time_scale * t, y)``; data_shape: one example's shape, (D,)
    for points or (C, H, W) for images in [-1, 1].
    """

    def __init__(self, net: nn.Module, data_shape: tuple[int, ...], time_scale: float = 1000.0):
        super().__init__()
        self.net, self.data_shape, self.time_scale = net, tuple(data_shape), float(time_scale)

    def velocity(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """v_theta(x_t, t): x_t [N, ...], t [N] in [0, 1] -> like x_t."""
        return self.net(x_t, self.time_scale * t, y)

    def loss(self, x: Tensor, y: Tensor | None = None, *, t: Tensor | None = None,
             x0: Tensor | None = None) -> dict:
        """{"loss", "mse"}: the mean of ``cfm_loss`` over the batch; x is the data x1 [N, *data_shape]."""
        if tuple(x.shape[1:]) != self.data_shape or not x.is_floating_point():
            raise ValueError(f"expected float data of shape [N, {', '.join(map(str, self.data_shape))}], got "
                             f"{x.dtype} {list(x.shape)}; scale images to [-1, 1] (preprocess does it for uint8).")
        loss = cfm_loss(lambda x_t, t_: self.velocity(x_t, t_, y), x, t=t, x0=x0).mean()
        return {"loss": loss, "mse": loss.detach()}

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, *, steps: int = 20, method: str = "euler",
               x0: Tensor | None = None, generator: torch.Generator | None = None, return_trajectory: bool = False):
        """Solve dx/dt = v_theta(x, t) from x(0) = x0 ~ N(0, I) to t = 1 in ``steps`` uniform steps.

        method: "euler" (NFE = steps) or "heun" (NFE = 2 steps). y: labels [n] or one int for a
        class-conditional network. Returns x(1) [n, *data_shape], or (x(1), {"t": [steps + 1],
        "x": [steps + 1, n, ...] on the CPU, "nfe": int}) when ``return_trajectory``.
        """
        device = next(self.parameters()).device
        if isinstance(y, int):
            y = torch.full((n,), y, device=device, dtype=torch.long)
        x = torch.randn((n, *self.data_shape), generator=generator, device=device) if x0 is None else x0.to(device)
        was_training = self.training
        self.eval()
        try:
            out = integrate(lambda x_, t: self.velocity(x_, t, y), x, torch.linspace(0, 1, steps + 1, dtype=torch.float64),
                            method=method, return_trajectory=return_trajectory)
        finally:
            self.train(was_training)
        return (out.x, {"t": out.t, "x": out.trajectory, "nfe": out.nfe}) if return_trajectory else out.x


def mixture_velocity(x: Tensor, t, centres: Tensor, std, *, weights=None) -> Tensor:
    """The exact marginal velocity v*(x, t) = E[x1 - x0 | x_t = x] for a Gaussian-mixture target.

    x1 ~ sum_k w_k N(c_k, s_k^2 I) (any dimension D), x0 ~ N(0, I). Given component k, (x1 - x0, x_t) is
    Gaussian with x_t ~ N(t c_k, v_k I), v_k = (1 - t)^2 + t^2 s_k^2 and Cov(x1 - x0, x_t) =
    (t s_k^2 - (1 - t)) I, so (Gaussian conditioning)

        E[x1 - x0 | x_t, k] = c_k + (t s_k^2 - (1 - t)) / v_k (x_t - t c_k),
        v*(x, t) = sum_k r_k(x) E[x1 - x0 | x_t = x, k],   r_k(x) = P(k | x_t = x).

    x [N, D]; t a float or [N] in [0, 1]; centres [K, D]; std a float or [K]; weights [K]. Returns [N, D].
    """
    centres, std2, log_w = _mixture_parts(x, centres, std, weights)
    t = _per_example(t, x)[:, None]  # (N, 1)
    var = (1 - t) ** 2 + t ** 2 * std2  # (N, K)
    r, diff = _mixture_posterior(x, t[:, :, None] * centres, var, log_w)  # diff = x_t - t c_k
    cond = centres + ((t * std2 - (1 - t)) / var)[:, :, None] * diff  # (N, K, D)
    return (r[:, :, None] * cond).sum(1)


def image_unet(image_shape: tuple[int, int, int], num_classes: int | None = None, in_channels: int | None = None,
               **unet_options) -> UNet:
    """A ``UNet`` with output channels C = image_shape[0] (and ``in_channels`` inputs, default C): the
    network of notebook 06 for models other than the DDPM (defaults base 16, mults (1, 2, 2))."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)!r}.")
    unet_options.setdefault("channel_mults", (1, 2, 2))
    unet_options["channel_mults"] = tuple(unet_options["channel_mults"])
    return UNet(UNetConfig(in_channels=in_channels or image_shape[0], out_channels=image_shape[0],
                           num_classes=num_classes, **unet_options))


def build_flow_matching(image_shape: tuple[int, ...], num_classes: int | None = None, *, time_scale: float = 1000.0,
                        hidden: int = 128, layers: int = 3, **unet_options) -> FlowMatching:
    """Zoo name ``flow_matching``: a ``UNet`` velocity for images (C, H, W) (options: ``UNetConfig`` fields,
    e.g. base_channels=16, channel_mults=(1, 2, 2)), an ``MLPDenoiser`` (hidden, layers) for points (D,)."""
    if len(image_shape) == 1:
        if num_classes is not None:
            raise ValueError("the 2D flow-matching network (MLPDenoiser) has no labels: train without --conditional.")
        return FlowMatching(MLPDenoiser(dim=image_shape[0], hidden=hidden, layers=layers), image_shape, time_scale)
    return FlowMatching(image_unet(tuple(image_shape), num_classes, **unet_options), image_shape, time_scale)
