"""benchmarks.run --suite pixelcnn writes a complete record (tiny net, a few steps, into a tmp dir)."""
import json
import warnings

import pytest

from benchmarks import run as bench


@pytest.mark.slow
def test_pixelcnn_suite_on_fixed_steps_with_overrides(tmp_path, monkeypatch, mnist_train):
    monkeypatch.setenv("PIXELCNN_DILATIONS", "1,2")
    monkeypatch.setenv("PIXELCNN_LAYERS", "2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        path = bench.main(["--suite", "pixelcnn", "--fast", "--steps", "3", "--device", "cpu",
                           "--out-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert record["steps"] == 3 and record["train_seconds_budget"] is None  # steps, not the clock
    assert "'layers': 2" in record["model"] and "'dilations': (1, 2)" in record["model"]
    assert record["env_overrides"] == {"PIXELCNN_DILATIONS": "1,2", "PIXELCNN_LAYERS": "2"}
    assert "falling linearly in steps" in record["lr"]
    assert 0 < record["bpd"] < 9 and record["n_test"] == 200
    assert record["sampling"]["n_samples"] == 4 and record["sampling"]["network_evaluations"] == 28 * 28


def test_a_malformed_override_names_the_variable_and_the_fix(monkeypatch):
    monkeypatch.setenv("PIXELCNN_DILATIONS", "1,x")
    with pytest.raises(SystemExit, match=r"PIXELCNN_DILATIONS='1,x' is not a comma-separated list.*PIXELCNN_DILATIONS=1,2,4"):
        bench.main(["--suite", "pixelcnn", "--fast", "--steps", "1", "--device", "cpu"])
