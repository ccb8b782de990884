"""End-to-end tests of `python -m course_lib train` and `sample`, and of the model zoo."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # makes train_models importable for the builder spec
import train_models  # noqa: E402,F401

from course_lib.__main__ import main  # noqa: E402
from course_lib.checkpoint import load_checkpoint  # noqa: E402
from course_lib.data import to_uint8  # noqa: E402
from course_lib.zoo import MODELS, build_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = "train_models:build_tiny"


def test_train_then_sample_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--model", TINY, "--data", "digits", "--n", "200", "--steps", "30",
             "--batch-size", "32", "--checkpoint-every", "10", "--log-every", "5", "--device", "cpu",
             "--conditional", "--option", "hidden=16", "--sample-n", "10"]
    assert main(train + ["--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out

    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 30
    assert ckpt["config"]["model"] == TINY and ckpt["config"]["options"] == {"hidden": 16}
    assert ckpt["config"]["image_shape"] == [1, 8, 8] and ckpt["config"]["num_classes"] == 10
    assert ckpt["model"]["net.0.weight"].shape == (16, 64)  # the option reached the builder
    history = json.loads((out / "history.json").read_text())
    assert history["history"]["step"] == [5, 10, 15, 20, 25, 30] and len(history["history"]["loss"]) == 6
    assert "scikit-learn" in history["config"]["data_source"]
    png = matplotlib.image.imread(out / "samples.png")
    # 10 images of 8x8, one row of the 10 classes, 2 px padding, every pixel enlarged 64 // 8 = 8 times
    assert png.shape[:2] == (8 * (8 + 2 + 2), 8 * (10 * (8 + 2) + 2))

    # sample: rebuilds the model from the checkpoint alone, EMA weights by default.
    pic, tensor = tmp_path / "s.png", tmp_path / "s.pt"
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--n", "6", "--out", str(pic),
                 "--tensor", str(tensor), "--label", "3", "--device", "cpu"]) == 0
    samples = torch.load(tensor)
    assert samples.shape == (6, 1, 8, 8) and samples.dtype == torch.uint8 and pic.is_file()  # what evaluate scores
    model = build_model(TINY, (1, 8, 8), 10, hidden=16)
    load_checkpoint(out / "checkpoint.pt", model, ema=True)
    torch.manual_seed(0)
    torch.testing.assert_close(samples, to_uint8(model.sample(6, torch.full((6,), 3))))

    # A second train into the same folder is refused; --resume continues from step 30.
    assert main(train + ["--out", str(out)]) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert train[8] == "30"
    assert main([*train[:8], "40", *train[9:], "--out", str(out), "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == 40 and history["history"]["step"][-3:] == [30, 35, 40]
    # Resuming with other build options is refused, naming the difference.
    assert main(train + ["--out", str(out), "--resume", "--option", "hidden=8"]) == 1
    assert "options" in capsys.readouterr().err


def test_train_2d_toy_set_writes_a_scatter(tmp_path):
    out = tmp_path / "toy"
    assert main(["train", "--model", TINY, "--data", "moons", "--n", "64", "--steps", "4",
                 "--batch-size", "16", "--device", "cpu", "--out", str(out), "--ema", "0"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["ema"] is None
    assert matplotlib.image.imread(out / "samples.png").shape == (400, 400, 4)  # 4 x 4 inches at 100 dpi


def test_zoo_errors_and_names():
    assert MODELS["ddpm"] == "course_lib.diffusion.model:build_ddpm"
    with pytest.raises(ValueError, match="unknown model 'gan9'"):
        build_model("gan9", (1, 8, 8))
    with pytest.raises(ValueError, match="cannot import"):
        build_model("no_such_module:build", (1, 8, 8))
    with pytest.raises(ValueError, match="has no function 'nope'"):
        build_model("train_models:nope", (1, 8, 8))
    with pytest.raises(TypeError, match=r"defines neither loss\(\) nor train_step\(\)"):
        build_model("torch.nn:Identity", (1, 8, 8))
