import random

import numpy as np
import pytest
import torch

from course_lib.runtime import budget, get_device, is_fast, seed_everything


def test_budget_follows_course_fast(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert is_fast() and budget(full=1000, fast=3) == 3
    monkeypatch.setenv("COURSE_FAST", "0")
    assert not is_fast() and budget(full=1000, fast=3) == 1000
    monkeypatch.delenv("COURSE_FAST")
    assert budget(full="big", fast="small") == "big"


def test_get_device_auto_and_override(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    auto = get_device("auto")
    if not torch.cuda.is_available():
        assert auto.type in {"cpu", "mps"}
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device("auto") == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_missing_cuda_names_the_fix(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU.*COURSE_DEVICE"):
        get_device("auto")


def test_seed_everything_repeats_all_three_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first
