"""Generative adversarial networks (notebook 04): the lecture's losses, Algorithm 1, and the networks."""
from course_lib.gan.cyclegan import CycleGAN, PatchDiscriminator, TranslationGenerator, build_cyclegan
from course_lib.gan.dcgan import DCGANDiscriminator, DCGANGenerator, build_dcgan
from course_lib.gan.infogan import InfoGAN, build_infogan, mutual_information_bound
from course_lib.gan.losses import (discriminator_loss, discriminator_loss_hinge, generator_loss_hinge,
                                   generator_loss_non_saturating, generator_loss_saturating)
from course_lib.gan.mlp import MLPGAN, build_mlp_gan
from course_lib.gan.model import GAN, truncated_normal
from course_lib.gan.rejection import acceptance_probability, rejection_sample
from course_lib.gan.self_conditioned import cluster_prior, kmeans

__all__ = ["discriminator_loss", "generator_loss_saturating", "generator_loss_non_saturating", "GAN",
           "truncated_normal", "MLPGAN", "build_mlp_gan", "DCGANGenerator", "DCGANDiscriminator", "build_dcgan",
           "PatchDiscriminator", "TranslationGenerator", "CycleGAN", "build_cyclegan", "kmeans", "cluster_prior",
           "InfoGAN", "build_infogan", "mutual_information_bound",
           "discriminator_loss_hinge", "generator_loss_hinge", "acceptance_probability", "rejection_sample"]
