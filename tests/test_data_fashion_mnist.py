"""Fashion-MNIST: the full set from the Debian package, and the named error for a damaged copy."""
from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import pytest
import torch

from course_lib.data import DataFileError, DataUnavailableError, load_dataset
from course_lib.data import mnist

pytestmark = pytest.mark.usefixtures("offline")

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_files = pytest.mark.skipif(
    not (DEBIAN / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed in {DEBIAN}: run `sudo apt-get update && sudo apt-get install "
    "dataset-fashion-mnist`, or `python -m course_lib data --download fashion_mnist` with a network")


@needs_files
@pytest.mark.needs_fashion_mnist
def test_full_train_and_test_splits():
    train = load_dataset("fashion_mnist", "train")
    assert train.x.shape == (60_000, 1, 28, 28) and train.x.dtype == torch.uint8
    assert torch.bincount(train.y).tolist() == [6000] * 10
    assert train.y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert train.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert str(DEBIAN) in train.source
    test = load_dataset("fashion_mnist", "test")
    assert test.x.shape == (10_000, 1, 28, 28) and torch.bincount(test.y).tolist() == [1000] * 10
    assert test.y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


@needs_files
@pytest.mark.needs_fashion_mnist
def test_course_data_copy_comes_first_and_truncation_is_named(offline):
    folder = offline / "fashion_mnist"
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DEBIAN / name, folder / name)
    assert str(folder) in load_dataset("fashion_mnist", "test").source
    images = folder / "t10k-images-idx3-ubyte"
    images.write_bytes(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())[:-784])
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataFileError, match="truncated") as err:
        load_dataset("fashion_mnist", "test")
    assert str(images) in str(err.value) and "--download fashion_mnist" in str(err.value)


def test_missing_everywhere_names_both_ways(tmp_path):
    """As on a laptop without the Debian package: the error names the package and the download."""
    spec = dataclasses.replace(mnist.FASHION_MNIST, system_dir=tmp_path / "no-such-dir")
    with pytest.raises(DataUnavailableError) as err:
        mnist.load_idx_set(spec, "train")
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text and "--download fashion_mnist" in text
