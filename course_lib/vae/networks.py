"""The convolutional encoder and decoder shared by the autoencoder, the VAE and the VQ-VAE (notebook 03).

Two stride-2 convolutions halve the image twice (28 -> 14 -> 7 for MNIST, 8 -> 4 -> 2 for the 8x8
digits, 32 -> 16 -> 8 for CIFAR-10); the decoder mirrors them with transposed convolutions::

    conv_encoder:  [N, C, H, W] -> [N, 2ch, H/4, W/4]        conv_decoder: [N, 2ch, H/4, W/4] -> [N, out, H, W]

The VAE puts a linear layer on each end (features <-> the latent vector z); the VQ-VAE quantises
the feature map itself, one code per position of the H/4 x W/4 grid. ``mlp`` is the network for
vectors (the 2D toy sets).
"""
from __future__ import annotations

from torch import nn

__all__ = ["check_image_shape", "conv_decoder", "conv_encoder", "mlp"]


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """[N, in] -> [N, out]: two hidden layers of width ``hidden`` with SiLU."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out_features))


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """(C, H, W) with H and W divisible by 4 (two stride-2 layers), else a clear error."""
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
        raise ValueError(f"the convolutional VAE family needs images (C, H, W) with H and W divisible by 4 "
                         f"(two stride-2 layers), got {image_shape}; pad or crop the images, or pass your own "
                         "encoder_net/decoder_net")
    return image_shape


def conv_encoder(in_channels: int, channels: int = 32) -> nn.Sequential:
    """[N, C, H, W] -> [N, 2 ch, H/4, W/4]: two 4x4 stride-2 convolutions with SiLU, then a 3x3 one."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.SiLU(),   # (N, ch, H/2, W/2)
        nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.SiLU(),  # (N, 2ch, H/4, W/4)
        nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.SiLU(),
    )


def conv_decoder(out_channels: int, channels: int = 32) -> nn.Sequential:
    """[N, 2 ch, H/4, W/4] -> [N, out, H, W]: the mirror of ``conv_encoder`` (no activation at the end:
    the output is the parameters of p(x | z), e.g. logits)."""
    return nn.Sequential(
        nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), nn.SiLU(),  # (N, ch, H/2, W/2)
        nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1),             # (N, out, H, W)
    )
