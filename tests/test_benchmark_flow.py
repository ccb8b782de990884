"""benchmarks.run --suite flow writes a complete record (tiny flow, a few steps, into a tmp dir)."""
import json
import warnings

import pytest

from benchmarks import run as bench


@pytest.mark.slow
def test_flow_suite_writes_a_complete_record(tmp_path, mnist_train):
    assert bench.SUITES["flow"] == "benchmarks.suite_flow:run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        path = bench.main(["--suite", "flow", "--fast", "--steps", "4", "--device", "cpu", "--out-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert record["suite"] == "flow" and record["steps"] == 4 and record["n_test"] == 200
    for key in ["bpd", "bpd_se", "bpd_ema", "bpd_convention", "steps_per_s", "sampling", "parameters",
                "load_average_during_training", "load_average_1min", "test_source", "hardware", "git_commit"]:
        assert key in record, key
    assert 0 < record["bpd"] < 9 and record["bpd_convention"].startswith("continuous_unit")
    assert record["sampling"]["T=1.0"]["n_samples"] == 8 and record["samples_per_s"] > 0
