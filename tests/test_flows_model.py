"""The flow models under the training contract: the bits/dim convention (a uniform density gives
exactly 8), dequantisation, ActNorm initialisation reaching the EMA through fit, training on 2D
data, the zoo and the command line, and clear errors on bad input."""
from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from course_lib.__main__ import main
from course_lib.checkpoint import load_checkpoint
from course_lib.evaluate import bits_per_dim
from course_lib.flows import BPD_CONVENTION, ActNorm, FlowModel, LogitTransform, RealNVP2D, uniform_dequantize
from course_lib.train import fit
from course_lib.zoo import MODELS, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"hidden": (4, 4, 4), "steps": (1, 1, 1)}


def _uint8(n=32, shape=(1, 8, 8), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=gen)


def test_dequantisation_stays_in_the_bin_and_postprocess_undoes_it():
    x = _uint8(256)
    torch.manual_seed(0)
    y = uniform_dequantize(x)
    assert y.dtype == torch.float32 and y.min() >= 0 and y.max() < 1
    assert torch.equal(torch.floor(256 * y).to(torch.uint8), x)  # y lies in x's bin [x, x + 1) / 256
    model = FlowModel((1, 8, 8), **TINY)
    assert torch.equal(model.postprocess(model.preprocess(x)), x)
    u = 256 * y - x.float()  # the noise: uniform on [0, 1), mean 1/2, variance 1/12
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    with pytest.raises(TypeError, match="uint8"):
        uniform_dequantize(y)


def test_a_uniform_density_gives_exactly_8_bits_per_dim_through_the_logit_transform():
    # v = logit(y) with a standard logistic prior on v is exactly the uniform density on [0, 1]:
    # log p(y) = log logistic(v) + log_det = 0. Under the flows' convention that is 8 bits/dim.
    y = uniform_dequantize(_uint8(16))
    v, log_det = LogitTransform(alpha=0.0).double()(y.double())
    log_logistic = (-v - 2 * torch.nn.functional.softplus(-v)).flatten(1).sum(1)
    log_p = log_logistic + log_det
    torch.testing.assert_close(log_p, torch.zeros_like(log_p), atol=1e-9, rtol=0)
    bpd = bits_per_dim(-log_p, y, nll_of=BPD_CONVENTION)
    torch.testing.assert_close(bpd, torch.full_like(bpd, 8.0))
    # the same number through FlowModel.loss's own formula, with the prior and log_det of a uniform density
    model = FlowModel((1, 8, 8), **TINY)
    model.flow.log_prob = lambda y: torch.zeros(y.shape[0])
    assert model.bits_per_dim(_uint8(4)).tolist() == [8.0] * 4


def test_loss_is_the_bits_per_dim_of_log_prob_and_its_parts_add_up():
    torch.manual_seed(0)
    model = FlowModel((1, 8, 8), **TINY)
    y = model.preprocess(_uint8(16))
    model.data_init(y)
    terms = model.loss(y)
    expected = bits_per_dim(-model.log_prob(y), y, nll_of="continuous_unit").mean()
    torch.testing.assert_close(terms["loss"].double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["prior_bpd"] + terms["log_det_bpd"], terms["loss"])


def test_bad_input_gets_a_clear_error():
    model = FlowModel((1, 8, 8), **TINY)
    with pytest.raises(TypeError, match="preprocess"):
        model.log_prob(_uint8(2))
    with pytest.raises(ValueError, match=r"shape \[N, 1, 8, 8\]"):
        model.loss(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="dequantised pixels in \\[0, 1\\]"):
        model.preprocess(torch.randn(2, 1, 8, 8) * 5)
    with pytest.raises(ValueError, match="divisible by 4"):
        FlowModel((1, 6, 6))
    with pytest.raises(ValueError, match="unconditional"):
        build_model("realnvp", (1, 8, 8), num_classes=10)


def test_fit_initialises_actnorm_before_the_ema_copy():
    torch.manual_seed(0)
    model = FlowModel((1, 8, 8), **TINY)
    x = _uint8(64) // 4 + 100  # pixel values 100..163: far from ActNorm's identity start
    result = fit(model, x, steps=3, batch_size=32, lr=1e-4, ema_decay=0.999, device="cpu", progress=False)
    actnorms = [(name, m) for name, m in result.ema.named_modules() if isinstance(m, ActNorm)]
    assert len(actnorms) == 3
    first = result.ema.flow.level1.layers[0]  # sees the logits of the pixels: far from identity
    assert isinstance(first, ActNorm) and first.log_scale.abs().max() > 0.5
    for name, m in actnorms:
        assert bool(m.initialized), name
        own = dict(model.named_modules())[name]
        torch.testing.assert_close(m.log_scale, own.log_scale, atol=2e-3, rtol=0)  # 3 small steps apart
    with torch.no_grad():  # and the EMA model scores the data about as well as the model itself
        y = model.preprocess(x)
        assert abs(result.ema.loss(y)["loss"].item() - model.loss(y)["loss"].item()) < 0.05


def test_realnvp2d_learns_two_moons_better_than_the_best_gaussian():
    from course_lib.data import load_dataset

    x = load_dataset("moons", "train", n=4000).x
    mean, cov = x.mean(0), torch.cov(x.T)
    gauss_nll = -torch.distributions.MultivariateNormal(mean, cov).log_prob(x).mean().item()
    torch.manual_seed(0)
    flow = RealNVP2D(num_layers=6, hidden=32)
    fit(flow, x, steps=400, batch_size=256, lr=3e-3, device="cpu", progress=False)
    with torch.no_grad():
        nll = -flow.log_prob(x).mean().item()
        samples = flow.sample(2000)
    assert nll < gauss_nll - 0.4, (nll, gauss_nll)  # a Gaussian cannot bend around the moons
    assert samples.shape == (2000, 2) and torch.isfinite(samples).all()
    cold = flow.sample(2000, temperature=0.25)
    assert cold.std(0).sum() < samples.std(0).sum()  # lower temperature, less spread


def test_zoo_cli_trains_and_samples_the_image_flow_and_the_2d_flow(tmp_path):
    assert MODELS["realnvp"] == "course_lib.flows.model:build_flow"
    out = tmp_path / "digits"
    assert main(["train", "--model", "realnvp", "--data", "digits", "--n", "128", "--steps", "4",
                 "--batch-size", "32", "--log-every", "2", "--device", "cpu", "--sample-n", "8",
                 "--option", "hidden=[4,4,4]", "--option", "steps=[1,1,1]", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())["history"]
    assert history["step"] == [2, 4] and all(math.isfinite(v) for v in history["loss"])
    assert {"prior_bpd", "log_det_bpd"} <= set(history) and (out / "samples.png").is_file()
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert any(k.endswith("initialized") and bool(v) for k, v in ckpt["ema"].items())
    tensor = tmp_path / "s.pt"
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--n", "5", "--out",
                 str(tmp_path / "s.png"), "--tensor", str(tensor), "--device", "cpu"]) == 0
    samples = torch.load(tensor)
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.uint8

    moons = tmp_path / "moons"
    assert main(["train", "--model", "realnvp", "--data", "moons", "--steps", "20", "--batch-size", "64",
                 "--lr", "1e-3", "--device", "cpu", "--option", "num_layers=4", "--out", str(moons)]) == 0
    assert (moons / "samples.png").is_file()
