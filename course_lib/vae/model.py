"""Zoo builders of the VAE family and the two-stage VQ-VAE sampler (notebook 03).

    python -m course_lib train --model vae --data mnist --steps 3000 --out runs/vae
    python -m course_lib train --model vae --data mnist --option decoder=logistic --out runs/vae8bit
    python -m course_lib train --model autoencoder --data mnist --out runs/ae        # no sampler: no samples.png
    python -m course_lib train --model vqvae --data mnist --out runs/vqvae          # first stage: no samples.png

Options (``--option KEY=VALUE``) go to the model's constructor: ``latent_dim``, ``channels``,
``decoder`` ("bernoulli" for binarized images, "logistic" for 8-bit ones, "gaussian" for 2D
points), ``beta``, ``kl_warmup`` (VAE); ``num_codes``, ``code_dim``, ``beta`` (the commitment
weight), ``dead_after`` (VQ-VAE).
"""
from __future__ import annotations

from torch import Tensor

from course_lib.contract import GenerativeModel
from course_lib.vae.prior import CodePrior, IndependentCodePrior
from course_lib.vae.vae import VAE, AutoEncoder
from course_lib.vae.vq import VQVAE

__all__ = ["VQVAESampler", "build_autoencoder", "build_vae", "build_vqvae"]


def _decoder_for(image_shape, options: dict) -> dict:
    """Default decoder: Gaussian for vectors (2D points), Bernoulli for images."""
    return {"decoder": "gaussian" if len(image_shape) == 1 else "bernoulli", **options}


def build_vae(image_shape, num_classes=None, **options) -> VAE:
    """Zoo name ``vae``: a convolutional VAE (an MLP one for 2D points); conditional with --conditional."""
    return VAE(tuple(image_shape), num_classes=num_classes, **_decoder_for(image_shape, options))


def build_autoencoder(image_shape, num_classes=None, **options) -> AutoEncoder:
    """Zoo name ``autoencoder``: the plain autoencoder with the VAE's networks, for comparison."""
    return AutoEncoder(tuple(image_shape), num_classes=num_classes, **_decoder_for(image_shape, options))


def build_vqvae(image_shape, num_classes=None, **options) -> VQVAE:
    """Zoo name ``vqvae``: the VQ-VAE's first stage (it cannot sample until a prior is fitted)."""
    if num_classes is not None:
        raise ValueError("the VQ-VAE is unconditional; train it without --conditional")
    if len(image_shape) != 3:
        raise ValueError(f"the VQ-VAE needs images (C, H, W), got shape {tuple(image_shape)}")
    return VQVAE(tuple(image_shape), **options)


class VQVAESampler(GenerativeModel):
    """A trained VQ-VAE and a prior over its codes as one model that samples: codes ~ prior, x = decode(codes)."""

    def __init__(self, vqvae: VQVAE, prior: CodePrior | IndependentCodePrior):
        super().__init__()
        if tuple(prior.grid) != tuple(vqvae.grid) or prior.num_codes != vqvae.quantizer.num_codes:
            raise ValueError(f"the prior models {prior.num_codes} codes on a {prior.grid} grid, the VQ-VAE has "
                             f"{vqvae.quantizer.num_codes} on {vqvae.grid}; fit the prior to vqvae.encode_codes(x)")
        self.vqvae, self.prior = vqvae, prior

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """x_hat [n, C, H, W] decoded from codes drawn from the prior (the decoder's mean)."""
        if y is not None:
            raise ValueError("VQVAESampler is unconditional: sample with y=None")
        return self.vqvae.decode_codes(self.prior.sample(n))

    def postprocess(self, samples: Tensor) -> Tensor:
        return self.vqvae.postprocess(samples)
