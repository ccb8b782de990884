"""Fixtures shared by the test modules.

* ``offline``: no real network and no writes to the user's data cache -- ``COURSE_DATA`` points at
  a temporary folder (returned), ``COURSE_OFFLINE=1``, and any real ``urlopen`` fails the test.
  Modules that never need the network use it for every test with
  ``pytestmark = pytest.mark.usefixtures("offline")``.
* ``one_torch_thread``: tiny models run faster on one thread on a busy 2-core machine.
* ``mnist_train``: the MNIST training digits (the offline sample at least), or a skip that says why not.
* ``SHARED_MNIST``: the genuine MNIST test set that CI provides beside the clone.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from course_lib.data import download

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    monkeypatch.setattr(download, "_network_down", None)
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("real network used"))
    return tmp_path / "data"


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mnist_train():
    from course_lib.data import load_dataset

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the offline fallback warns
            return load_dataset("mnist", "train")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"MNIST training digits unavailable here ({err})")


@pytest.fixture
def two_families():
    """512 unlabelled-style 8x8 uint8 images: family 0 bright on top, family 1 bright below (random
    brightness 0.8..1): (x [512, 1, 8, 8], family [512]). A toy with exactly two modes for GAN tests."""
    g = torch.Generator().manual_seed(0)
    family = torch.arange(512) % 2
    x = torch.zeros(512, 1, 8, 8)
    x[family == 0, :, :4] = 1.0
    x[family == 1, :, 4:] = 1.0
    return (x * 255 * (0.8 + 0.2 * torch.rand(512, 1, 1, 1, generator=g))).to(torch.uint8), family
