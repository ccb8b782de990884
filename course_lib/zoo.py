"""The model zoo: names the command line (``python -m course_lib train --model NAME``) can build.

Each entry maps a name to a builder given as ``"package.module:function"``; the module is
imported only when that model is built. A builder has the signature::

    build(image_shape: tuple[int, ...], num_classes: int | None, **options) -> nn.Module

and returns a model with ``loss(x, y=None) -> dict`` and ``sample(n, y=None)`` (see
``course_lib.train``). Anything not in ``MODELS`` may be given directly as
``"package.module:function"``, so an instructor or a test can plug in their own model::

    model = build_model("ddpm", (1, 28, 28), num_classes=10, base_channels=64)
    model = build_model("my_models:build_small_vae", (1, 28, 28), None)
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

__all__ = ["MODELS", "resolve_builder", "build_model"]

MODELS: dict[str, str] = {
    "ddpm": "course_lib.diffusion.model:build_ddpm",
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
    missing = [m for m in ("loss", "sample") if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(
            f"model {name!r} ({type(model).__name__}) lacks the method(s) {missing} that fit and sample need"
        )
    return model
