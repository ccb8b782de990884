"""benchmarks.run --suite gan writes a complete record (tiny DCGANs, a few steps, into a tmp dir)."""
import json
import warnings

import pytest

from benchmarks import run as bench, suite_gan


@pytest.mark.slow
def test_gan_suite_records_three_generators_on_the_same_floor(tmp_path, mnist_train, monkeypatch):
    monkeypatch.setenv("GAN_EMA_DECAY", "0.9")  # recorded as an override (the decay itself is read at import)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        path = bench.main(["--suite", "gan", "--fast", "--steps", "3", "--device", "cpu", "--out-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert record["suite"] == "gan" and record["steps"] == 3 and record["env_overrides"] == {"GAN_EMA_DECAY": "0.9"}
    assert 0.8 < record["real_floor"]["confident_fraction_p>0.7"] <= 1
    for name in ("unconditional", "conditional"):
        gan = record[name]
        assert set(gan["variants"]) == {"live", "live_standing", "ema_standing", "live_drs"}
        assert gan["samples"] == {k: v for k, v in gan["variants"][suite_gan.HEADLINE].items() if k != "fid_over_floor"}
        for v in gan["variants"].values():
            assert v["fid"] > 0 and v["fid_over_floor"] == pytest.approx(v["fid"] / record["real_floor"]["fid"])
            assert sum(v["class_shares"]) == pytest.approx(1)
    assert "label_accuracy" in record["conditional"]["samples"]
    assert "label_accuracy" not in record["unconditional"]["samples"]
    for name in ("unconditional", "conditional"):
        assert 0 < record[name]["drs"]["acceptance_rate"] <= 1
        assert record[name]["drs"]["gamma_quantile"] == suite_gan.DRS_QUANTILE and "y" not in record[name]["drs"]
    assert "label_accuracy" in record["conditional"]["variants"]["live_drs"]


def _two_steps(tmp_path) -> dict:
    """The record of a fast gan-suite run of 2 steps written into tmp_path (the offline-MNIST warning muted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = bench.main(["--suite", "gan", "--fast", "--steps", "2", "--device", "cpu", "--out-dir", str(tmp_path)])
    return json.loads(path.read_text())


@pytest.mark.slow
def test_gan_suite_self_conditioned_alone(tmp_path, mnist_train, monkeypatch):
    """GAN_SELF_CONDITION=k trains the unconditional GAN on k pixel clusters; GAN_ONLY skips the other GAN."""
    monkeypatch.setattr(suite_gan, "SELF_CONDITION", 5)
    monkeypatch.setenv("GAN_ONLY", "unconditional")
    record = _two_steps(tmp_path)
    assert "conditional" not in record and "self-conditioned on 5 k-means clusters" in record["unconditional"]["model"]
    assert "label_accuracy" not in record["unconditional"]["samples"]
    monkeypatch.setenv("GAN_ONLY", "both")
    with pytest.raises(SystemExit, match="GAN_ONLY must be"):
        bench.main(["--suite", "gan", "--fast", "--device", "cpu", "--out-dir", str(tmp_path)])


def test_gan_suite_refuses_a_drs_quantile_outside_0_1_before_training(monkeypatch):
    import importlib
    import sys

    monkeypatch.setenv("GAN_DRS_QUANTILE", "1.5")
    monkeypatch.delitem(sys.modules, "benchmarks.suite_gan")
    with pytest.raises(SystemExit, match=r"GAN_DRS_QUANTILE=1.5 must be a quantile in \[0, 1\)"):
        importlib.import_module("benchmarks.suite_gan")
    monkeypatch.undo()  # the module as imported before, with the default quantile
    assert importlib.import_module("benchmarks.suite_gan").DRS_QUANTILE == 0.95


def test_gan_suite_refuses_a_malformed_override(monkeypatch):
    monkeypatch.setenv("GAN_SELF_CONDITION", "fifty")
    with pytest.raises(SystemExit, match="GAN_SELF_CONDITION='fifty' must be of type int, e.g. GAN_SELF_CONDITION=0"):
        suite_gan._env_number("GAN_SELF_CONDITION", "0", int)


@pytest.mark.slow
def test_gan_suite_trains_an_infogan_and_refuses_two_structures(tmp_path, mnist_train, monkeypatch):
    """GAN_INFO=K trains the unconditional GAN as an InfoGAN; with GAN_SELF_CONDITION too it is refused."""
    monkeypatch.setattr(suite_gan, "INFO_CODES", 10)
    monkeypatch.setenv("GAN_ONLY", "unconditional")
    record = _two_steps(tmp_path)
    assert "InfoGAN with a 10-way code" in record["unconditional"]["model"]
    assert set(record["unconditional"]["variants"]) == {"live", "live_standing", "ema_standing"}
    monkeypatch.setattr(suite_gan, "SELF_CONDITION", 5)
    with pytest.raises(SystemExit, match="set one"):
        _two_steps(tmp_path)


@pytest.mark.slow
def test_gan_suite_trains_both_gans_with_diffaugment(tmp_path, mnist_train, monkeypatch):
    monkeypatch.setattr(suite_gan, "AUGMENT", 1)
    record = _two_steps(tmp_path)
    assert all("DiffAugment (translation, cutout)" in record[name]["model"] for name in ("unconditional", "conditional"))


@pytest.mark.slow
def test_gan_suite_trains_sngan_with_hinge_losses_and_refuses_it_for_infogan(tmp_path, mnist_train, monkeypatch):
    monkeypatch.setattr(suite_gan, "HINGE", 1)
    monkeypatch.setattr(suite_gan, "SPECTRAL_NORM", 1)
    monkeypatch.setenv("GAN_ONLY", "conditional")
    record = _two_steps(tmp_path)
    assert "hinge losses, spectral norm in D" in record["conditional"]["model"]
    monkeypatch.setattr(suite_gan, "INFO_CODES", 10)
    monkeypatch.setenv("GAN_ONLY", "unconditional")
    with pytest.raises(SystemExit, match="unset GAN_SN or GAN_INFO"):
        _two_steps(tmp_path)
