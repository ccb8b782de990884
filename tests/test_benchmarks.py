"""benchmarks.run writes a complete JSON record (tiny budget, into a tmp dir)."""
import json
import warnings

import pytest

from benchmarks import run as bench


@pytest.mark.slow
def test_fit_suite_writes_a_complete_record(tmp_path, dataset="mnist"):
    try:
        from course_lib.data import load_dataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_dataset(dataset, "train")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"{dataset} training data unavailable here ({err})")
    path = bench.main(["--suite", "fit", "--fast", "--steps", "4", "--dataset", dataset,
                       "--device", "cpu", "--out-dir", str(tmp_path)])
    assert path.parent == tmp_path
    record = json.loads(path.read_text())
    for key in ["suite", "model", "dataset", "n_train", "device", "device_summary", "steps", "results",
                "git_commit", "date", "hardware", "host_cores", "cpu", "torch", "command"]:
        assert key in record, key
    assert record["suite"] == "fit" and record["dataset"] == dataset and record["steps"] == 4
    assert record["n_train"] == 2000 and record["host_cores"] >= 1
    assert set(record["results"]) == set(record["model"]) == {"conv_autoencoder", "mlp_autoencoder"}
    for result in record["results"].values():
        assert set(result["steps_per_s"]) == {"fit", "loop_batches", "loop_dataloader"}
        for name, value in result["steps_per_s"].items():
            assert value == pytest.approx(4 / result["wall_time_s"][name])
            assert result["samples_per_s"][name] == pytest.approx(value * record["batch_size"])
        assert result["ratio_batches_over_dataloader"] == pytest.approx(
            result["steps_per_s"]["loop_batches"] / result["steps_per_s"]["loop_dataloader"])


def test_suites_are_pluggable_and_unknown_ones_refused():
    assert "fit" in bench.SUITES and all(":" in target for target in bench.SUITES.values())
    args = bench.build_parser().parse_args(["--suite", "fit", "--dataset", "fashion_mnist"])
    assert args.dataset == "fashion_mnist"
    with pytest.raises(SystemExit):
        bench.main(["--suite", "no_such_suite", "--fast"])


@pytest.mark.slow
def test_fit_overhead_suite_compares_the_old_and_new_fit(tmp_path):
    from benchmarks import suite_fit_overhead

    try:
        suite_fit_overhead._fit_before()
    except RuntimeError as err:
        pytest.skip(str(err))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        path = bench.main(["--suite", "fit_overhead", "--fast", "--steps", "5", "--device", "cpu",
                           "--out-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert record["baseline_commit"] == suite_fit_overhead.BASELINE_COMMIT and record["steps"] == 5
    t = record["probe_wall_time_s"]
    for version in ("before", "after"):
        expected = 1000 * (t[version] - t[f"{version}_setup"] - t["bare"]) / 5
        assert record["overhead_ms_per_step"][version] == pytest.approx(expected)
    assert record["ddpm_steps_per_s"] == {}  # the DDPM comparison runs in full mode only


def test_ddim_suite_refuses_a_slow_ema_it_cannot_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("DDIM_CHECKPOINT", str(tmp_path / "ddim.pt"))
    monkeypatch.setenv("DDIM_SLOW_EMA", "1")
    with warnings.catch_warnings(), pytest.raises(SystemExit, match="slow EMA is not checkpointed"):
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        bench.main(["--suite", "ddim", "--fast", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert not (tmp_path / "ddim.pt").exists() and not list(tmp_path.glob("*.json"))


def test_records_started_in_the_same_second_do_not_overwrite_each_other(tmp_path):
    path = tmp_path / "flow_mnist_cpu_full_20261202T071610.json"
    written = [bench.write_new(path, f'{{"run": {k}}}\n') for k in range(3)]
    assert [p.name for p in written] == [path.name, path.stem + "_2.json", path.stem + "_3.json"]
    assert [json.loads(p.read_text())["run"] for p in written] == [0, 1, 2]


def test_amp_is_refused_by_a_suite_that_ignores_it_and_on_a_host_without_bf16(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="--amp is read by the suites ddim, gan, pixelcnn, not by 'fit'"):
        bench.main(["--suite", "fit", "--fast", "--amp", "--device", "cpu", "--out-dir", str(tmp_path)])
    monkeypatch.setattr(bench, "has_fast_bf16", lambda device: False)
    with pytest.raises(SystemExit, match=r"--amp needs a CUDA GPU with bf16 \(Ampere or later\) or a CPU with bf16 instructions"):
        bench.main(["--suite", "gan", "--fast", "--amp", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("samplers", ["ddpm_1000,ddim_50,ddim_7", "ddim_50,ddim_1000"])
def test_ddim_suite_refuses_unknown_samplers_or_a_missing_target_pair(tmp_path, monkeypatch, samplers):
    monkeypatch.setenv("DDIM_SAMPLERS", samplers)
    with warnings.catch_warnings(), pytest.raises(SystemExit, match="with ddpm_1000 and ddim_50 among them"):
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        bench.main(["--suite", "ddim", "--fast", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_ddim_ratios_name_each_pair_that_ran():
    from benchmarks.suite_ddim import _ratios
    runs = {"ddpm_1000": {"fid": 2.0}, "ddim_50": {"fid": 3.0}, "ddim_1000": {"fid": 2.5}, "eta1_50": {"fid": 2.2}}
    assert _ratios(runs) == {"ddim50_fid_over_ddpm1000": 1.5, "ddim50_fid_over_ddim1000": 1.2,
                             "eta1_50_fid_over_ddpm1000": pytest.approx(1.1)}


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_amp_suite_records_both_precisions_or_refuses_without_fast_bf16(tmp_path, monkeypatch, fast_bf16):
    import course_lib.runtime
    import course_lib.train

    for module in (course_lib.runtime, course_lib.train, bench):  # the bf16 path runs on any CPU, emulated
        monkeypatch.setattr(module, "has_fast_bf16", lambda device: fast_bf16)
    argv = ["--suite", "amp", "--fast", "--steps", "2", "--device", "cpu", "--out-dir", str(tmp_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        if not fast_bf16:
            with pytest.raises(SystemExit, match="no fast bf16"):
                bench.main(argv)
            assert not list(tmp_path.iterdir())
            return
        record = json.loads(bench.main(argv).read_text())
    assert set(record["results"]) == {"dcgan", "pixelcnn", "ddpm"} and record["steps"] == 2
    for result in record["results"].values():
        for precision in ("float32", "bf16"):
            assert result["steps_per_s"][precision] == result["runs"][precision][0]["steps_per_s"] > 0
        assert result["speedup_bf16_over_float32"] == pytest.approx(
            result["steps_per_s"]["bf16"] / result["steps_per_s"]["float32"])
