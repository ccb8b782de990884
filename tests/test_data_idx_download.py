"""The IDX reader on files written here, and atomic, md5-checked downloads through a fake network."""
from __future__ import annotations

import gzip
import hashlib
import io
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from course_lib.data import DataFileError, DataUnavailableError, load_dataset
from course_lib.data import download
from course_lib.data.idx import parse_idx, read_idx

pytestmark = pytest.mark.usefixtures("offline")

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture
def fake_net(monkeypatch):
    """Downloads on, but only through the fake ``opener`` a test passes to ``fetch``."""
    monkeypatch.delenv("COURSE_OFFLINE")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array in IDX, written independently of the reader (struct-free, by hand)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C, np.dtype(">f8"): 0x0E}
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, code[big.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + big.tobytes()


@pytest.mark.parametrize("array", [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-5, 0, 7], dtype=np.int8),
    np.array([[1, -2], [70000, 3]], dtype=">i4"),
    np.linspace(-1, 1, 6).reshape(3, 2).astype(">f8"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, array, compress):
    data = idx_bytes(array)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(data) if compress else data)
    got = read_idx(path, md5=hashlib.md5(data).hexdigest())
    assert got.shape == array.shape and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00", "too short"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad IDX magic"),   # unknown type code 0x07
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad IDX magic"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", r"truncated: header \(3,\) needs 11 bytes, file has 10"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "longer than its header"),
])
def test_idx_structure_errors_name_the_file(data, message):
    with pytest.raises(DataFileError, match=message) as err:
        parse_idx(data, "some/file-idx1-ubyte")
    assert "some/file-idx1-ubyte" in str(err.value) and "delete it" in str(err.value)


def test_idx_md5_mismatch(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataFileError, match="md5 of the decompressed bytes is"):
        read_idx(path, md5="0" * 32)


class FakeResponse(io.BytesIO):
    """What urlopen returns; ``fail_after`` bytes into the body the connection drops."""

    def __init__(self, body: bytes, fail_after: int | None = None):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(n if self.fail_after is None else min(n, self.fail_after - self.tell() or n))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_writes_verified_file_and_no_temporary(tmp_path, fake_net):
    body = gzip.compress(b"payload" * 1000)
    dest = tmp_path / "dl" / "file.gz"
    got = download.fetch(["http://a/file.gz"], dest, md5=hashlib.md5(b"payload" * 1000).hexdigest(),
                         opener=lambda url, timeout: FakeResponse(body))
    assert got == dest and dest.read_bytes() == body and leftovers(dest.parent) == ["file.gz"]


def test_interrupted_download_leaves_nothing(tmp_path, fake_net):
    body = bytes(range(256)) * 20000                  # 5 MB, read in 1 MiB chunks
    dest = tmp_path / "dl" / "file.gz"
    with pytest.raises(download.NetworkUnavailable, match="reset"):
        download.fetch(["http://a/f", "http://b/f"], dest, md5=None,
                       opener=lambda url, timeout: FakeResponse(body, fail_after=3 * 2**20))
    assert leftovers(dest.parent) == []               # neither dest nor a .part file


def test_md5_mismatch_download_is_not_kept(tmp_path, fake_net):
    dest = tmp_path / "dl" / "file.gz"
    with pytest.raises(DataFileError, match="expected 0{32}; nothing was kept"):
        download.fetch(["http://a/f"], dest, md5="0" * 32,
                       opener=lambda url, timeout: FakeResponse(gzip.compress(b"abc")))
    assert leftovers(dest.parent) == []


def test_http_error_tries_next_mirror(tmp_path, fake_net):
    tried = []

    def opener(url, timeout):
        tried.append(url)
        if "first" in url:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return FakeResponse(b"ok")

    download.fetch(["http://first/f", "http://second/f"], tmp_path / "f", opener=opener)
    assert tried == ["http://first/f", "http://second/f"] and download._network_down is None


def test_timeout_stops_at_first_mirror_and_is_remembered(tmp_path, fake_net):
    tried = []

    def opener(url, timeout):
        tried.append(timeout)
        raise urllib.error.URLError(socket.timeout("timed out"))

    with pytest.raises(download.NetworkUnavailable, match="no network"):
        download.fetch(["http://a/f", "http://b/f", "http://c/f"], tmp_path / "f", opener=opener)
    assert tried == [download.TIMEOUT_S] and download.TIMEOUT_S <= 10
    with pytest.raises(download.NetworkUnavailable, match="downloads are off: no network"):
        download.fetch(["http://a/f"], tmp_path / "f", opener=opener)
    assert len(tried) == 1


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST test files not found in {SHARED_MNIST}")
def test_load_dataset_downloads_through_a_fake_mirror(monkeypatch, offline):
    """The whole path: missing files -> mirror -> md5 of decompressed bytes -> atomic rename -> tensors."""
    monkeypatch.delenv("COURSE_OFFLINE")
    served = []

    def mirror(url, timeout):
        served.append(url)
        return FakeResponse((SHARED_MNIST / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(download.urllib.request, "urlopen", mirror)
    data = load_dataset("mnist", "test")
    assert data.y[:5].tolist() == [7, 2, 1, 0, 4] and data.source.startswith("downloaded to")
    assert leftovers(offline / "mnist") == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in served)
    load_dataset("mnist", "test")                     # now found on disk: no second download
    assert len(served) == 2


def test_offline_env_never_calls_the_opener(tmp_path):
    with pytest.raises(download.NetworkUnavailable, match="COURSE_OFFLINE"):
        download.fetch(["http://a/f"], tmp_path / "f", opener=lambda *a, **k: pytest.fail("network used"))
    with pytest.raises(DataUnavailableError, match="COURSE_OFFLINE"):
        load_dataset("cifar10")
