"""Tests of course_lib.checkpoint: atomic writes, corrupt files, map_location, RNG states."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.checkpoint import (
    CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
)


def _model(value):
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_failure_mid_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": _model(1.0).state_dict(), "ema": None}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the disk, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"model": _model(2.0).state_dict(), "ema": None}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind
    m = _model(0.0)
    load_checkpoint(path, m)
    assert torch.all(m.weight == 1.0)  # still the old checkpoint


def test_truncated_or_foreign_files_give_clear_errors(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": _model(1.0).state_dict(), "ema": None}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a course_lib checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_model_mismatch_and_missing_ema(tmp_path):
    path = save_checkpoint({"model": _model(1.0).state_dict(), "ema": None}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(path, nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_checkpoint(path, _model(0.0), ema=True)


def test_map_location_is_used(tmp_path):
    path = save_checkpoint({"model": _model(1.0).state_dict(), "ema": None}, tmp_path / "c.pt")
    seen = []

    def where(storage, location):  # torch calls this for every stored tensor
        seen.append(location)
        return storage

    load_checkpoint(path, map_location=where)
    assert seen and set(seen) == {"cpu"}
    on_meta = load_checkpoint(path, map_location="meta")
    assert on_meta["model"]["weight"].device.type == "meta"


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    path = save_checkpoint({"rng": get_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(path)["rng"])
    got = (random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
