"""2D toy sets, digits, pixel transforms and index-slice batching."""
from __future__ import annotations

import pytest
import torch

from course_lib.data import (batches, binarize, dequantize, load_dataset, quantize, to_signed, to_uint8,
                             to_unit)
from course_lib.data import download

TOYS = ["moons", "8gaussians", "swissroll", "checkerboard"]
ALL_BYTES = torch.arange(256, dtype=torch.uint8)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    monkeypatch.setattr(download, "_network_down", None)


@pytest.mark.parametrize("name", TOYS)
def test_toy_shapes_scale_and_determinism(name):
    a = load_dataset(name, n=4000, seed=3)
    assert a.x.shape == (4000, 2) and a.x.dtype == torch.float32 and a.y.shape == (4000,)
    assert a.y.dtype == torch.int64 and a.classes is None and torch.isfinite(a.x).all()
    assert ((a.x.std(0) > 0.6) & (a.x.std(0) < 1.4)).all()        # "similar scale" across sets
    assert a.x.abs().mean(0).max() < 1.5 and a.x.mean(0).abs().max() < 0.4
    b = load_dataset(name, n=4000, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, load_dataset(name, n=4000, seed=4).x)
    assert not torch.equal(a.x, load_dataset(name, "test", n=4000, seed=3).x)  # test split: another seed


def test_toy_default_size_and_bad_n():
    assert load_dataset("moons").x.shape == (10_000, 2)
    with pytest.raises(ValueError, match="n must be positive"):
        load_dataset("moons", n=0)
    with pytest.raises(ValueError, match="unknown data set 'mnits'"):
        load_dataset("mnits")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("moons", "val")


def test_toy_geometry():
    x, y = load_dataset("checkerboard", n=5000)
    assert x.min() >= -2 and x.max() <= 2
    cell = torch.floor(x).long() + 2                                  # 0..3 per coordinate
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()                 # only black squares
    assert len({tuple(c) for c in cell.tolist()}) == 8
    x, y = load_dataset("8gaussians", n=8000)
    for k in range(8):                                    # component k: angle k * 45 deg, radius sqrt(2)
        angle = torch.tensor(k * torch.pi / 4)
        expected = 2**0.5 * torch.stack([torch.cos(angle), torch.sin(angle)])
        torch.testing.assert_close(x[y == k].mean(0), expected, atol=0.03, rtol=0)


def test_digits_are_scaled_honestly():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert train.x.shape == (1497, 1, 8, 8) and test.x.shape == (300, 1, 8, 8)
    assert train.x.dtype == torch.uint8 and train.x.max() == 255
    raw = torch.from_numpy(load_digits().images).reshape(-1, 1, 8, 8)
    both = torch.cat([train.x, test.x])
    # each stored level v in 0..16 becomes round(v * 255 / 16), and the order is kept
    assert torch.equal(both, torch.round(raw * 255 / 16).to(torch.uint8))
    assert len(torch.unique(both)) <= 17


def test_signed_round_trip_is_exact():
    assert torch.equal(to_uint8(to_signed(ALL_BYTES)), ALL_BYTES)
    v = to_signed(ALL_BYTES)
    assert v.dtype == torch.float32 and v[0] == -1 and v[-1] == 1
    assert to_unit(ALL_BYTES)[-1] == 1 and to_unit(ALL_BYTES)[0] == 0
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        to_signed(v)


def test_dequantize_stays_in_its_bin():
    x = ALL_BYTES.repeat(2000)                                        # every value, 2000 times
    g = torch.Generator().manual_seed(0)
    y = dequantize(x, generator=g)
    assert y.dtype == torch.float32 and y.min() >= 0 and y.max() < 1
    assert torch.equal(torch.floor(256 * y).to(torch.uint8), x)
    u = 256 * y - x.float()                                           # the noise, should be U[0, 1)
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)
    assert u.var().item() == pytest.approx(1 / 12, abs=0.005)
    assert torch.equal(dequantize(x, torch.Generator().manual_seed(0)), y)
    # the worst case for float32: noise just below 1 on pixel 255 must not round up to 256
    assert (256 * dequantize(torch.full((100000,), 255, dtype=torch.uint8)) < 256).all()


def test_binarize_and_quantize():
    b = binarize(ALL_BYTES)
    assert b.dtype == torch.float32 and torch.equal(b, (ALL_BYTES.float() / 255 > 0.5).float())
    assert b.sum() == 128
    x = torch.full((20000,), 64, dtype=torch.uint8)
    s = binarize(x, stochastic=True, generator=torch.Generator().manual_seed(1))
    assert set(s.unique().tolist()) == {0.0, 1.0} and s.mean().item() == pytest.approx(64 / 255, abs=0.01)
    for bits in (1, 3, 5, 8):
        q = quantize(ALL_BYTES, bits)
        assert q.dtype == torch.uint8 and torch.equal(q.unique(), torch.arange(2**bits, dtype=torch.uint8))
        assert torch.equal(q, (ALL_BYTES.long() // 2 ** (8 - bits)).to(torch.uint8))
    with pytest.raises(ValueError, match="bits"):
        quantize(ALL_BYTES, 0)


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_cover_every_row_once(drop_last):
    x = torch.arange(103)
    y = x * 10
    got = list(batches((x, y), 10, generator=torch.Generator().manual_seed(0), drop_last=drop_last))
    xs = torch.cat([b[0] for b in got])
    assert torch.equal(torch.cat([b[1] for b in got]), xs * 10)     # rows stay paired
    if drop_last:
        assert len(got) == 10 and len(set(xs.tolist())) == 100
    else:
        assert torch.equal(xs.sort().values, x) and not torch.equal(xs, x)
    again = list(batches((x, y), 10, generator=torch.Generator().manual_seed(0), drop_last=drop_last))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again))
    assert torch.equal(torch.cat(list(batches(x, 7, shuffle=False))), x)


def test_batches_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="disagree"):
        next(batches((torch.zeros(3), torch.zeros(4)), 2))
