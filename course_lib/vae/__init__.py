"""Variational autoencoders and discrete latents (notebook 03): VAE, autoencoder, VQ-VAE, Gumbel-softmax.

Modules: ``likelihoods`` (decoders p(x | z): Bernoulli, discretized logistic, Gaussian), ``networks``
(the convolutional encoder and decoder), ``vae`` (reparameterisation, KL, ELBO, the IWAE bound,
``VAE``, ``AutoEncoder``), ``vq`` (nearest code, straight-through, codebook and commitment losses,
perplexity, dead codes, ``VQVAE``), ``prior`` (priors over the code grid), ``gumbel`` (Gumbel-max,
Gumbel-softmax), ``model`` (zoo builders ``vae``, ``autoencoder``, ``vqvae``; ``VQVAESampler``).
"""
from course_lib.vae.gumbel import gumbel_max_sample, gumbel_softmax, sample_gumbel
from course_lib.vae.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian, discretized_logistic_log_prob
from course_lib.vae.model import VQVAESampler, build_autoencoder, build_vae, build_vqvae
from course_lib.vae.prior import CodePrior, IndependentCodePrior
from course_lib.vae.vae import (
           VAE,
           AutoEncoder,
           importance_log_weights,
           iwae_bound,
           iwae_from_log_weights,
           kl_to_standard_normal,
           negative_elbo,
           reparameterize,
)
from course_lib.vae.vq import VQVAE, VectorQuantizer, nearest_code, perplexity, straight_through, vq_losses

__all__ = [
           "VAE",
           "VQVAE",
           "AutoEncoder",
           "Bernoulli",
           "CodePrior",
           "DiscretizedLogistic",
           "Gaussian",
           "IndependentCodePrior",
           "VQVAESampler",
           "VectorQuantizer",
           "build_autoencoder",
           "build_vae",
           "build_vqvae",
           "discretized_logistic_log_prob",
           "gumbel_max_sample",
           "gumbel_softmax",
           "importance_log_weights",
           "iwae_bound",
           "iwae_from_log_weights",
           "kl_to_standard_normal",
           "nearest_code",
           "negative_elbo",
           "perplexity",
           "reparameterize",
           "sample_gumbel",
           "straight_through",
           "vq_losses",
]
