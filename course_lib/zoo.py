"""The model zoo: names the command line (``python -m course_lib train --model NAME``) can build.

Each entry maps a name to a builder given as ``"package.module:function"``; the module is
imported only when that model is built. A builder has the signature::

    build(image_shape: tuple[int, ...], num_classes: int | None, **options) -> nn.Module

and returns a model that follows the training contract of ``course_lib.contract``: it defines
``loss(x, y=None) -> dict`` or its own ``train_step`` (a GAN), and ``sample(n, y=None)`` if it
can sample (a VQ-VAE's first stage or a CycleGAN cannot; ``sample`` then says so). Anything not in ``MODELS`` may be given directly as
``"package.module:function"``, so an instructor or a test can plug in their own model::

    model = build_model("ddpm", (1, 28, 28), num_classes=10, base_channels=64)
    model = build_model("my_models:build_small_vae", (1, 28, 28), None)
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from course_lib.contract import is_trainable

__all__ = ["MODELS", "resolve_builder", "build_model"]

MODELS: dict[str, str] = {
    "ddpm": "course_lib.diffusion.model:build_ddpm",
    "gan_mlp": "course_lib.gan.mlp:build_mlp_gan",
    "pixelcnn": "course_lib.autoregressive.model:build_pixelcnn",
    "realnvp": "course_lib.flows.model:build_flow",
    "dcgan": "course_lib.gan.dcgan:build_dcgan",
    "cyclegan": "course_lib.gan.cyclegan:build_cyclegan",
    "vae": "course_lib.vae.model:build_vae",
    "autoencoder": "course_lib.vae.model:build_autoencoder",
    "vqvae": "course_lib.vae.model:build_vqvae",
    "flow_matching": "course_lib.diffusion.flow_matching:build_flow_matching",
    "vdm": "course_lib.diffusion.vdm:build_vdm",
}


def resolve_builder(name: str) -> Callable[..., nn.Module]:
    """The builder function for a zoo name or a ``"package.module:function"`` string."""
    spec = MODELS.get(name, name)
    if ":" not in spec:
        raise ValueError(
            f"unknown model {name!r}: choose one of {sorted(MODELS)} "
            "or give a builder as 'package.module:function'"
        )
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import the builder module {module_name!r} for model {name!r}: {exc}"
        ) from exc
    builder = getattr(module, function_name, None)
    if not callable(builder):
        raise ValueError(f"module {module_name!r} has no function {function_name!r} (model {name!r})")
    return builder


def build_model(
    name: str, image_shape: tuple[int, ...], num_classes: int | None = None, **options
) -> nn.Module:
    """Build a model by zoo name or ``"package.module:function"``; ``options`` go to the builder."""
    model = resolve_builder(name)(tuple(image_shape), num_classes, **options)
    if not is_trainable(model):
        raise TypeError(f"model {name!r} ({type(model).__name__}) defines neither loss() nor train_step(), "
                        "so fit cannot train it (see course_lib.contract)")
    return model
