"""Latent diffusion (Rombach et al. 2022, "High-resolution image synthesis with latent diffusion
models"), notebook 08, section 3.

A trained VAE (``course_lib.vae.VAE``, notebook 03) compresses each image x into the mean mu(x) of its
posterior q(z | x), a vector of ``latent_dim`` numbers. A DDPM is trained on

    z = mu(x) / scale,        scale = the standard deviation of mu(x) over a batch of training images,

so the latents have unit variance, as the forward process assumes of its data (Rombach et al.,
section 4.3.2 and appendix G: "we rescale the latents ... to unit standard deviation", the factor
measured on the first batch). Sampling draws z with the DDPM and decodes x = decoder(scale * z) (the
decoder's mean). The VAE stays frozen. Each network evaluation works on ``latent_dim`` numbers with a
small MLP instead of the pixels with a U-Net, which is where the speed comes from.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib.contract import GenerativeModel
from course_lib.diffusion.gaussian_diffusion import GaussianDiffusion
from course_lib.diffusion.toy import MLPDenoiser

__all__ = ["LatentDiffusion", "build_latent_diffusion"]


class LatentDiffusion(GenerativeModel):
    """A frozen VAE and a DDPM on its scaled latents, on the training contract (``fit`` trains the DDPM).

    vae: a trained, unconditional ``course_lib.vae.VAE`` (any module with ``encode(x) -> (mu, log_var)``,
    ``decode(z)``, ``latent_dim``, ``preprocess`` and ``postprocess``); diffusion: a ``GaussianDiffusion``
    with data_shape (latent_dim,). ``scale`` is measured by ``data_init`` (``fit`` calls it on the first
    batch) unless given.
    """

    def __init__(self, vae: nn.Module, diffusion: GaussianDiffusion, scale: float | None = None):
        super().__init__()
        if getattr(vae, "num_classes", None):
            raise ValueError("latent diffusion here is unconditional: train the VAE without labels (num_classes=None).")
        if tuple(diffusion.data_shape) != (vae.latent_dim,):
            raise ValueError(f"the diffusion model's data_shape is {tuple(diffusion.data_shape)}, the VAE's latents "
                             f"have {vae.latent_dim} numbers: build it with data_shape=({vae.latent_dim},).")
        self.vae, self.diffusion = vae.requires_grad_(False).eval(), diffusion
        self.register_buffer("scale", torch.tensor(float("nan") if scale is None else float(scale)))

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen: never in training mode (dropout, batch statistics)
        return self

    def preprocess(self, x: Tensor) -> Tensor:
        """The VAE's own conversion of a stored batch (e.g. binarization for a Bernoulli decoder)."""
        return self.vae.preprocess(x)

    def postprocess(self, samples: Tensor) -> Tensor:
        return self.vae.postprocess(samples)

    @torch.no_grad()
    def measure_scale(self, x: Tensor) -> float:
        """Set scale = std of the posterior means mu(x) over the batch x (all entries pooled); returns it."""
        mu = self.vae.encode(x)[0]
        self.scale.fill_(mu.std().item())
        return self.scale.item()

    def data_init(self, x: Tensor, y: Tensor | None = None) -> None:
        if torch.isnan(self.scale):
            self.measure_scale(x)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """z = mu(x) / scale: [N, C, H, W] (the VAE's input space) -> [N, latent_dim]."""
        if torch.isnan(self.scale):
            raise RuntimeError("the latent scale is not measured yet: call model.measure_scale(x) on a batch of "
                               "training images (fit does it through data_init), or pass scale=...")
        return self.vae.encode(x)[0] / self.scale

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """x_hat = the VAE decoder's mean at scale * z: [N, latent_dim] -> [N, C, H, W]."""
        return self.vae.decode(z * self.scale)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict:
        """The DDPM's L_simple on the scaled latents of the batch ({"loss", "mse"})."""
        if y is not None:
            raise ValueError("LatentDiffusion is unconditional: train it without labels (y=None).")
        return self.diffusion.loss(self.encode(x))

    def configure_optimizers(self, lr: float):
        return torch.optim.Adam(self.diffusion.parameters(), lr=lr)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, **sample_options) -> Tensor:
        """z ~ the DDPM (Algorithm 2, no clipping: latents are not images), then x_hat = decode(z): [n, C, H, W].

        ``sample_options`` go to ``GaussianDiffusion.sample`` (e.g. generator=...).
        """
        if y is not None:
            raise ValueError("LatentDiffusion is unconditional: sample with y=None.")
        sample_options = {"progress": False, **sample_options, "clip_x0": False}
        return self.decode(self.diffusion.sample(n, **sample_options))


def build_latent_diffusion(vae: nn.Module, *, T: int = 1000, schedule: str = "linear", hidden: int = 256,
                           layers: int = 3, emb_dim: int = 32, scale: float | None = None) -> LatentDiffusion:
    """A ``LatentDiffusion`` with an ``MLPDenoiser`` eps_theta (``layers`` hidden layers of width ``hidden``)
    on the VAE's latents: with latent_dim 32 and the defaults, 0.15M parameters."""
    net = MLPDenoiser(dim=vae.latent_dim, hidden=hidden, emb_dim=emb_dim, layers=layers)
    return LatentDiffusion(vae, GaussianDiffusion(net, data_shape=(vae.latent_dim,), schedule=schedule, T=T), scale)
