"""load_train_test: the real test split when there is one, a disjoint held-out part otherwise."""
from pathlib import Path

import pytest
import torch

from course_lib.data import DataFallbackWarning, DataUnavailableError, load_dataset, load_train_test


@pytest.fixture
def offline_empty_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    return tmp_path


def test_held_out_test_set_when_the_test_split_is_missing(offline_empty_data_dir):
    with pytest.raises(DataUnavailableError):
        load_dataset("mnist", "test")
    with pytest.warns(DataFallbackWarning):
        train, test = load_train_test("mnist", holdout=500)
    assert len(train) == 4500 and len(test) == 500 and test.split == "test"
    assert "held out" in test.source and "held out" in train.source
    # disjoint: no held-out image appears among the training images
    flat_train = train.x.reshape(len(train), -1)
    for image in test.x[:20].reshape(20, -1):
        assert not (flat_train == image).all(1).any()
    full = load_dataset("mnist", "train")
    assert torch.equal(torch.cat([train.x, test.x]), full.x)


@pytest.mark.needs_fashion_mnist
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs the full Fashion-MNIST: apt-get install dataset-fashion-mnist")
def test_the_real_test_split_is_used_when_present(offline_empty_data_dir):
    train, test = load_train_test("fashion_mnist")
    assert len(train) == 60_000 and len(test) == 10_000 and test.source.startswith("Debian")
