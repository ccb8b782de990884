"""The PixelCNN model: exact likelihood by brute force, sampling from p, completion, the CLI, bad input."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from course_lib.__main__ import main
from course_lib.autoregressive import build_pixelcnn
from course_lib.checkpoint import load_checkpoint
from course_lib.evaluate import bits_per_dim

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(shape, gated=True, bits=1, num_classes=None, **options):
    torch.manual_seed(0)
    cfg = {"hidden": 6 if shape[0] == 3 else 4, "layers": 2, "first_kernel": 3, "kernel": 3}
    return build_pixelcnn(shape, num_classes, gated=gated, bits=bits, **{**cfg, **options}).eval()


def _all_images(shape, bits=1) -> torch.Tensor:
    """Every image of the shape with 2**bits levels, as uint8 [2**(bits*D), C, H, W] (top bits set)."""
    levels = torch.tensor(list(itertools.product(range(2 ** bits), repeat=math.prod(shape))))
    return (levels << (8 - bits)).to(torch.uint8).view(-1, *shape)


@pytest.mark.parametrize("mixtures", [None, 2])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 1, 2)])
def test_probabilities_of_all_images_sum_to_one(gated, shape, mixtures):
    model = _model(shape, gated, mixtures=mixtures)
    images = _all_images(shape)                                      # 16 or 64 images
    with torch.no_grad():
        total = model.log_prob(images).double().exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mixtures", [None, 3])
@pytest.mark.parametrize("gated", [False, True])
def test_log_prob_is_the_chain_rule_evaluated_one_value_at_a_time(gated, mixtures):
    # brute force: p(x_t | x_<t) read off the net with every value from t on replaced by noise
    shape = (3, 2, 2)
    model, C, H, W = _model(shape, gated, bits=2, mixtures=mixtures), *shape
    x = torch.randint(0, 256, (5, *shape), dtype=torch.uint8)
    levels = model.preprocess(x)
    chain = torch.zeros(5, dtype=torch.float64)
    order = [(c, i, j) for i in range(H) for j in range(W) for c in range(C)]
    with torch.no_grad():
        for t, (c, i, j) in enumerate(order):
            scrambled = levels.clone()
            for c2, i2, j2 in order[t:]:
                scrambled[:, c2, i2, j2] = torch.randint(0, 4, (5,))
            log_p = model.logits(scrambled).log_softmax(2)[:, c, :, i, j]    # [N, K]
            chain += log_p.gather(1, levels[:, c, i, j, None])[:, 0].double()
        torch.testing.assert_close(model.log_prob(x).double(), chain, atol=1e-4, rtol=0)


def test_loss_and_bits_per_dim_agree_with_log_prob():
    model = _model((1, 4, 4), bits=8, hidden=8)
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    terms = model.loss(model.preprocess(x))
    nll = -model.log_prob(x).detach()
    torch.testing.assert_close(terms["loss"].detach(), nll.mean() / 16)
    torch.testing.assert_close(terms["bpd"], nll.mean() / 16 / math.log(2))
    torch.testing.assert_close(model.bits_per_dim(x, batch_size=4), bits_per_dim(nll, x, nll_of="discrete"))


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("shape", [(1, 6, 7), (3, 4, 5)])
def test_pixel_by_pixel_logits_equal_the_full_pass(gated, shape):
    # sampling evaluates a crop per pixel; it must give exactly what the full network gives
    model = _model(shape, gated, bits=2, layers=3, dilations=(1, 2))
    inp = model.net_input(model.preprocess(torch.randint(0, 256, (3, *shape), dtype=torch.uint8)))
    with torch.no_grad():
        full = model.net(inp)
        for i in range(shape[1]):
            state = model.net.begin_row(inp[:, :, :i + 1])
            for j in range(shape[2]):
                torch.testing.assert_close(model.net.pixel_logits(state, inp[:, :, i:i + 1], j), full[..., i, j],
                                           atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mixtures", [None, 2])
def test_samples_follow_the_model_distribution(mixtures):
    # Monte Carlo: frequencies of 4,000 samples of a 16-image model match exp(log_prob)
    shape = (1, 2, 2)
    model = _model(shape, gated=True, mixtures=mixtures)
    samples = model.sample(4000, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (4000, 1, 2, 2) and samples.dtype == torch.int64
    codes = (samples.flatten(1) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=16).double() / 4000
    with torch.no_grad():
        p = model.log_prob(_all_images(shape)).double().exp()
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / 4000)  # 4 standard errors at worst


@pytest.mark.parametrize("gated", [False, True])
def test_completion_keeps_the_given_pixels_and_conditional_sampling(gated):
    shape = (3, 4, 4)
    model = _model(shape, gated, bits=8, num_classes=3, hidden=6)
    x = torch.randint(0, 256, (5, *shape), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1])
    done = model.complete(x, 6, y, generator=torch.Generator().manual_seed(0))
    assert done.shape == (5, 3, 4, 4)
    given = torch.zeros(4, 4, dtype=torch.bool).flatten()
    given[:6] = True
    given = given.view(4, 4)
    assert torch.equal(done[:, :, given], x[:, :, given].long())
    assert not torch.equal(done[:, :, ~given], x[:, :, ~given].long())   # the rest was drawn anew
    assert torch.equal(model.complete(x, 16, y), x.long())              # nothing left to draw
    images = model.postprocess(model.sample(2, torch.tensor([2, 2])))
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="class-conditional"):
        model.sample(2)
    with pytest.raises(ValueError, match="n_given"):
        model.complete(x, 17, y)


def test_bad_input_says_what_to_do():
    model = _model((1, 4, 4), bits=8)
    with pytest.raises(TypeError, match="uint8"):
        model.preprocess(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="built for"):
        model.preprocess(torch.zeros(2, 1, 5, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unconditional"):
        model.loss(model.preprocess(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)), torch.tensor([0, 1]))


def test_n_bit_model_postprocess_spans_the_full_range():
    model = _model((1, 2, 2), bits=2)
    x = torch.tensor([0, 70, 130, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    assert model.preprocess(x).flatten().tolist() == [0, 1, 2, 3]
    assert model.postprocess(model.preprocess(x)).flatten().tolist() == [0, 85, 170, 255]


def test_data_init_starts_at_the_pixel_marginal():
    model = _model((1, 4, 4), bits=1)
    levels = torch.tensor([0] * 12 + [1] * 4).view(1, 1, 4, 4)
    model.data_init(levels)
    torch.testing.assert_close(model.net.head.out.bias, torch.tensor([13 / 18, 5 / 18]).log())


def test_cli_trains_and_samples_a_pixelcnn_from_the_zoo(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "pixelcnn", "--data", "digits", "--n", "64", "--steps", "4", "--batch-size",
                 "16", "--device", "cpu", "--conditional", "--option", "hidden=10", "--option", "layers=1",
                 "--option", "first_kernel=3", "--sample-n", "10", "--log-every", "2", "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["config"]["model"] == "pixelcnn" and (out / "samples.png").is_file()
    assert "bpd" in capsys.readouterr().out
    tensor = tmp_path / "s.pt"
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--n", "3", "--label", "7",
                 "--out", str(tmp_path / "s.png"), "--tensor", str(tensor), "--device", "cpu"]) == 0
    samples = torch.load(tensor)
    assert samples.shape == (3, 1, 8, 8) and samples.dtype == torch.uint8


def test_label_dropout_gives_one_model_for_p_x_given_y_and_p_x():
    shape = (1, 2, 2)
    model = build_pixelcnn(shape, 3, bits=1, hidden=4, layers=1, first_kernel=3, label_dropout=0.5).eval()
    assert model.num_classes == 3 and model.net.cfg.num_classes == 4  # the 4th class is "no label"
    images = _all_images(shape)
    with torch.no_grad():
        for y in (None, torch.full((16,), 2)):                  # p(x) and p(x | y = 2): each sums to one
            total = model.log_prob(images, y).double().exp().sum()
            torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)
        assert not torch.allclose(model.log_prob(images), model.log_prob(images, torch.full((16,), 2)))
    assert model.sample(3).shape == (3, 1, 2, 2)
    with pytest.raises(ValueError, match="0..3 .3 = no label"):
        model.log_prob(images, torch.full((16,), 4))
    torch.manual_seed(0)
    model.train()
    levels, y = model.preprocess(images), torch.zeros(16, dtype=torch.long)
    seen = []
    model.net.register_forward_pre_hook(lambda _, args: seen.append(args[1].clone()))
    model.loss(levels, y)
    assert set(seen[0].tolist()) == {0, 3}                      # some labels kept, some dropped


def test_benchmark_suite_runs_in_fast_mode(tmp_path, monkeypatch):
    import json

    from benchmarks import run as bench

    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.setenv("PIXELCNN_EMA", "0.9")  # also score an EMA of the weights
    path = bench.main(["--suite", "pixelcnn", "--fast", "--device", "cpu", "--out-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert record["suite"] == "pixelcnn" and record["steps"] > 0 and record["sampling"]["network_evaluations"] == 784
    assert 0 < record["bpd"] < 8 and record["sampling"]["n_samples"] == 4
    assert list(record["bpd_by_ema"]) == ["0.9"] and 0 < record["bpd_by_ema"]["0.9"] < 8
    assert record["bpd_by_ema"]["0.9"] != record["bpd"]  # the average is not the raw weights


@pytest.mark.parametrize("text", ["0.9x", "1.5", "0.99,-0.1"])
def test_benchmark_suite_refuses_a_bad_ema_decay(text):
    from benchmarks.suite_pixelcnn import _decays

    with pytest.raises(SystemExit, match=r"must be comma-separated decays in \[0, 1\), e.g. PIXELCNN_EMA=0.995,0.999"):
        _decays(text)
    assert _decays("0.995, 0.999") == (0.995, 0.999) and _decays("") == ()
