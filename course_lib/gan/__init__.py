"""Generative adversarial networks (notebook 04): the losses of the lecture and the models built on them."""
from course_lib.gan.losses import discriminator_loss, generator_loss_non_saturating, generator_loss_saturating
from course_lib.gan.mlp import MLPGAN, build_mlp_gan

__all__ = ["discriminator_loss", "generator_loss_saturating", "generator_loss_non_saturating", "MLPGAN",
           "build_mlp_gan"]
