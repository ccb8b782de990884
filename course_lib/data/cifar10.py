"""CIFAR-10 from its python-pickle batches (the official ``cifar-10-python.tar.gz``).

Layout accepted in ``<data dir>/cifar10/``: the extracted folder ``cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, or the archive itself (read in place).
Each batch is a pickled dict: ``b"data"`` uint8 [N, 3072] (1024 red, then 1024 green, then 1024
blue values of a 32x32 image, rows first) and ``b"labels"`` (N ints in 0..9).

Safety: unpickling can run arbitrary code, and a data folder is not a trusted place. The
batches are read with a restricted unpickler that can only rebuild numpy arrays (and the bytes,
lists and dicts around them); anything else is refused with a ``DataFileError``.
"""
from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from course_lib.data import download
from course_lib.data.errors import DataFileError, DataUnavailableError, data_dir, download_command
from course_lib.data.imageset import ImageSet

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "locate", "read_batch", "download_archive"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # of the .tar.gz as distributed
FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SIZES = {"train": 50_000, "test": 10_000}
_FIX = f"delete it and run `{download_command('cifar10')}`"

# The only callables a CIFAR-10 batch needs: numpy's array reconstruction (its module path differs
# between numpy 1 and 2, hence the aliases) and the bytes encoder of protocol-2 pickles written by Python 3.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays are allowed)"
                                         ) from None


def read_batch(data: bytes, where: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch: images uint8 [N, 3, 32, 32], labels int64 [N]. Checks every field."""
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # a truncated or foreign pickle fails in many ways (EOFError, ...)
        problem = f"not a readable CIFAR-10 batch ({type(err).__name__}: {err})"
        raise DataFileError(where, problem, _FIX) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataFileError(where, f"expected a dict with b'data' and b'labels', got {keys}", _FIX)
    pixels, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.shape[1:] == (3072,)):
        got = f"{getattr(pixels, 'dtype', type(pixels).__name__)} {getattr(pixels, 'shape', '')}"
        raise DataFileError(where, f"b'data' must be uint8 [N, 3072], got {got}", _FIX)
    n = pixels.shape[0]
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or n and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(where, f"b'labels' must be {n} integers in 0..9, got shape {labels.shape}", _FIX)
    return pixels.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def locate(root=None) -> tuple[str, Path] | None:
    """("folder", path) if the extracted batches are present, ("archive", path) for the tar.gz, else None."""
    base = data_dir(root) / "cifar10"
    if all((base / FOLDER / name).is_file() for names in BATCHES.values() for name in names):
        return "folder", base / FOLDER
    if (base / ARCHIVE).is_file():
        return "archive", base / ARCHIVE
    return None


def _read_split(kind: str, path: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if kind == "folder":
        return [read_batch((path / name).read_bytes(), path / name) for name in BATCHES[split]]
    try:
        with tarfile.open(path, "r:gz") as tar:
            out = []
            for name in BATCHES[split]:
                member = tar.extractfile(f"{FOLDER}/{name}")
                out.append(read_batch(member.read(), f"{path}!{FOLDER}/{name}"))
            return out
    except (tarfile.TarError, EOFError, OSError, KeyError) as err:
        problem = f"truncated or corrupt archive ({type(err).__name__}: {err})"
        raise DataFileError(path, problem, _FIX) from None


def download_archive(root=None) -> Path:
    """Download the official tar.gz (163 MB) into ``<data dir>/cifar10/`` and check its md5."""
    dest = data_dir(root) / "cifar10" / ARCHIVE
    return download.fetch([URL], dest, md5=ARCHIVE_MD5, md5_of_decompressed=False)


def load_cifar10(split: str = "train", *, root=None, allow_download: bool = True) -> ImageSet:
    if split not in BATCHES:
        raise ValueError(f"cifar10: split must be 'train' or 'test', got {split!r}")
    found = locate(root)
    why_not = "downloads disabled (download=False)"
    if found is None and allow_download:
        try:
            found = ("archive", download_archive(root))
        except download.NetworkUnavailable as err:
            why_not = str(err)
    if found is None:
        target = data_dir(root) / "cifar10"
        raise DataUnavailableError(
            f"CIFAR-10 not found ({why_not}). To get it: connect to the internet and run "
            f"`{download_command('cifar10')}`, or put {ARCHIVE} (or its extracted {FOLDER}/) "
            f"into {target}.")
    kind, path = found
    parts = _read_split(kind, path, split)
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))  # [N, 3, 32, 32] uint8
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))  # [N] int64
    return ImageSet(x, y, "cifar10", split, f"CIFAR-10 python batches in {path}", CIFAR10_CLASSES)
