"""Autoregressive image models (notebook 02): masked convolutions, naive and gated PixelCNN, the model.

    from course_lib.autoregressive import build_pixelcnn
    model = build_pixelcnn((1, 28, 28), num_classes=None)   # gated, 256-way categorical per pixel
    fit(model, x_uint8, steps=...)                            # preprocess: uint8 -> levels
    model.sample(16); model.complete(x_uint8, n_given=14 * 28); model.log_prob(x_uint8)

Modules: ``masks`` (types A/B, colour groups, vertical/horizontal kernels, ``MaskedConv2d``),
``pixelcnn`` (``PixelCNN``, ``GatedPixelCNN``), ``model`` (``AutoregressiveImageModel``, ``build_pixelcnn``),
``logistic`` (the discretized logistic mixture, PixelCNN++'s output: ``build_pixelcnn(..., mixtures=5)``).
"""
from course_lib.autoregressive.masks import (
                                             MaskedConv2d,
                                             channel_groups,
                                             horizontal_mask,
                                             raster_mask,
                                             vertical_mask,
)
from course_lib.autoregressive.model import AutoregressiveImageModel, build_pixelcnn
from course_lib.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN, PixelCNNConfig

__all__ = [
                                             "AutoregressiveImageModel",
                                             "GatedPixelCNN",
                                             "MaskedConv2d",
                                             "PixelCNN",
                                             "PixelCNNConfig",
                                             "build_pixelcnn",
                                             "channel_groups",
                                             "horizontal_mask",
                                             "raster_mask",
                                             "vertical_mask",
]
