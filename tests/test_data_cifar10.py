"""CIFAR-10 loader on small batches written here in the genuine python-pickle format."""
from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from course_lib.data import DataFileError, DataUnavailableError, load_dataset
from course_lib.data import cifar10, download

pytestmark = pytest.mark.usefixtures("offline")


class Py2Pickler(pickle._Pickler):
    """Writes a pickle as Python 2's cPickle wrote the real CIFAR-10 batches: every str as BINSTRING
    (so it loads back as bytes) and numpy's globals under their numpy 1 name ``numpy.core``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)


def py2_dumps(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def make_batch(n: int, seed: int) -> dict:
    """A batch as in cifar-10-python.tar.gz: bytes keys, data uint8 [n, 3072] (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch %d of 5" % seed,
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


@pytest.fixture
def cifar_folder(offline):
    folder = offline / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = make_batch(7 + i, seed=i)
        # the training batches as Python 2 wrote them, the test batch as Python 3 would: both must load
        dumps = py2_dumps if name.startswith("data_batch") else lambda b: pickle.dumps(b, protocol=2)
        (folder / name).write_bytes(dumps(batches[name]))
    return folder, batches


def test_train_concatenates_the_five_batches_in_channel_order(cifar_folder):
    folder, batches = cifar_folder
    assert b"numpy.core.multiarray\n_reconstruct" in (folder / "data_batch_1").read_bytes()
    data = load_dataset("cifar10", "train")
    assert data.x.shape == (7 + 8 + 9 + 10 + 11, 3, 32, 32) and data.x.dtype == torch.uint8
    assert data.y.dtype == torch.int64 and data.classes[0] == "airplane" and data.classes[9] == "truck"
    first = batches["data_batch_1"][b"data"][0]                     # one row of 3072 bytes
    assert torch.equal(data.x[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))       # red plane
    assert torch.equal(data.x[0, 2], torch.from_numpy(first[2048:].reshape(32, 32)))       # blue plane
    assert data.y[7:15].tolist() == batches["data_batch_2"][b"labels"]
    test = load_dataset("cifar10", "test")
    assert test.x.shape[0] == 12 and test.y.tolist() == batches["test_batch"][b"labels"]


def test_reads_the_official_archive_in_place(cifar_folder, offline):
    folder, batches = cifar_folder
    with tarfile.open(offline / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    data = load_dataset("cifar10", "test")
    assert "cifar-10-python.tar.gz" in data.source
    assert data.y.tolist() == batches["test_batch"][b"labels"]


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_restricted_unpickler_refuses_code(cifar_folder, tmp_path):
    folder, _ = cifar_folder
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": []}, protocol=2))
    with pytest.raises(DataFileError, match="refused to load (posix|os|nt).system"):
        load_dataset("cifar10", "test")
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a readable CIFAR-10 batch"),
    (lambda b: pickle.dumps({b"data": np.zeros((3, 3071), np.uint8), b"labels": [0, 1, 2]}),
     r"uint8 \[N, 3072\]"),
    (lambda b: pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}),
     "b'labels' must be 3"),
    (lambda b: pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), "in 0..9"),
    (lambda b: pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}),
     "integers in 0..9"),
    (lambda b: pickle.dumps([1, 2, 3]), "expected a dict"),
])
def test_damaged_batch_raises_named_error(cifar_folder, damage, message):
    folder, _ = cifar_folder
    path = folder / "test_batch"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataFileError, match=message) as err:
        load_dataset("cifar10", "test")
    assert str(path) in str(err.value) and "--download cifar10" in str(err.value)


def test_truncated_archive_raises_named_error(cifar_folder, offline):
    folder, _ = cifar_folder
    archive = offline / "cifar10" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for f in folder.iterdir():
        f.unlink()
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataFileError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", "test")


def test_missing_without_network_is_a_clear_error(offline):
    with pytest.raises(DataUnavailableError, match="--download cifar10") as err:
        load_dataset("cifar10", "train")
    assert str(offline / "cifar10") in str(err.value)


def test_download_checks_the_archive_md5(monkeypatch, offline):
    """A download whose md5 differs from the official archive's is refused and not kept."""
    monkeypatch.delenv("COURSE_OFFLINE")

    class Response:
        headers = {}

        def __init__(self):
            self.chunks = [b"not the archive"]

        def read(self, n):
            return self.chunks.pop() if self.chunks else b""

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(DataFileError, match=cifar10.ARCHIVE_MD5):
        load_dataset("cifar10", "train")
    assert list((offline / "cifar10").iterdir()) == []
