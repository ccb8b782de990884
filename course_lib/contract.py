"""The training contract: what a model tells ``fit`` (and the command line) about itself.

The model, not the loop, knows how it trains. ``fit`` asks it six questions; each has a default
here, so a plain ``nn.Module`` with only a ``loss`` method trains without subclassing anything:

=============================================  ==============================  =========================================
hook                                           default                         override it for
=============================================  ==============================  =========================================
``preprocess(x) -> input``                     uint8 -> [-1, 1]; floats as is  PixelCNN (integer targets), flows
                                                                               (dequantised), binarized VAE ({0, 1})
``configure_optimizers(lr)``                   ``Adam(parameters, lr)``        GAN: ``{"G": opt_g, "D": opt_d}``
``train_step(x, y, step, update) -> terms``    ``loss``, then one ``update``   GAN: Algorithm 1 (k D steps, one G step)
``data_init(x, y)``                            nothing                         ActNorm (Glow): data-dependent init
``sample(n, y=None)``                          "cannot sample" error           every model that can sample
``postprocess(samples) -> uint8 images``       [-1, 1] -> uint8; 2D as is      models whose samples are not in [-1, 1]
=============================================  ==============================  =========================================

``update(loss, name=None)`` is handed to ``train_step`` by ``fit``: it zeroes the gradients of the
named optimizer's parameters, back-propagates ``loss`` (outside autocast), clips their global
norm to ``grad_clip`` and takes the optimizer step; it returns the norm before clipping, a
device tensor (no GPU sync). ``name`` may be left out when the model has one optimizer.

``train_step`` returns a dict of scalar terms to log; the terms may differ from step to step (a
GAN logs ``d_loss`` every step and ``g_loss`` every k-th): ``fit`` averages each term over the
steps that logged it. Random draws in ``preprocess`` (dequantisation noise, stochastic
binarisation) are made on the batch's device with the global torch generator, which ``fit``
checkpoints, so resumed runs stay exact.

Subclass :class:`GenerativeModel` to inherit the defaults and document the interface; ``fit``
falls back to the same defaults for any module that lacks a hook (see :func:`hook`).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from course_lib.data.transforms import to_signed, to_uint8

__all__ = ["GenerativeModel", "CannotSampleError", "hook", "overrides", "can_sample", "is_trainable"]


class CannotSampleError(NotImplementedError):
    """The model has no sampler (a VQ-VAE's first stage, a CycleGAN, a discriminator...)."""


class GenerativeModel(nn.Module):
    """Base class with the contract's defaults; override what your family needs."""

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """{"loss": scalar to minimise, other named scalar terms to log} for one batch."""
        raise NotImplementedError(f"{type(self).__name__} defines neither loss() nor train_step()")

    def preprocess(self, x: Tensor) -> Tensor:
        """A stored batch -> the model's input: uint8 pixels to [-1, 1] (x / 127.5 - 1); floats unchanged."""
        return to_signed(x) if x.dtype == torch.uint8 else x

    def configure_optimizers(self, lr: float) -> torch.optim.Optimizer | dict[str, torch.optim.Optimizer]:
        """One optimizer, or a dict name -> optimizer (each is checkpointed under its name)."""
        return torch.optim.Adam(self.parameters(), lr=lr)

    def train_step(self, x: Tensor, y: Tensor | None, step: int, update: Callable) -> dict[str, Tensor]:
        """One training step on a preprocessed batch: the default minimises ``loss`` with one update."""
        terms = self.loss(x) if y is None else self.loss(x, y)
        if not isinstance(terms, dict) or "loss" not in terms:
            raise TypeError(f"{type(self).__name__}.loss() must return a dict with a scalar 'loss' (and other "
                            f"named terms to log), got {type(terms).__name__}")
        return {**terms, "grad_norm": update(terms["loss"])}

    def data_init(self, x: Tensor, y: Tensor | None = None) -> None:
        """Data-dependent initialisation, run by ``fit`` once on a preprocessed batch before training
        (and before the EMA copy is made). The default does nothing."""

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n samples in the model's input space, on its device."""
        raise CannotSampleError(
            f"{type(self).__name__} cannot draw samples (it is not a generative model on its own: e.g. a "
            "VQ-VAE's first stage needs a prior over its codes); sample from a model that defines sample()")

    def postprocess(self, samples: Tensor) -> Tensor:
        """Samples -> what is shown and scored: images [N, C, H, W] in [-1, 1] to uint8; 2D points as they are."""
        return to_uint8(samples) if samples.dim() == 4 and samples.is_floating_point() else samples


def hook(model: nn.Module, name: str) -> Callable:
    """``model.<name>`` if the model defines it, else the default of :class:`GenerativeModel` bound to it."""
    method = getattr(model, name, None)
    return method if callable(method) else partial(getattr(GenerativeModel, name), model)


def overrides(model: nn.Module, name: str) -> bool:
    """True if the model defines hook ``name`` itself (not the default of :class:`GenerativeModel`)."""
    method = getattr(model, name, None)
    return callable(method) and getattr(type(model), name, None) is not getattr(GenerativeModel, name)


def can_sample(model: nn.Module) -> bool:
    """True if the model can draw samples (its own ``sample``, not the "cannot sample" default)."""
    return overrides(model, "sample")


def is_trainable(model: nn.Module) -> bool:
    """True if ``fit`` can train the model: it defines ``loss`` or its own ``train_step``."""
    return overrides(model, "loss") or overrides(model, "train_step")
