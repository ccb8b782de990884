"""The VAE family's decoders, models and training: likelihoods against scipy/torch, the contract's
preprocess, training through ``fit`` and the command line, priors over codes, and clear errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib.__main__ import main
from course_lib.contract import CannotSampleError, can_sample
from course_lib.data import load_dataset
from course_lib.train import fit
from course_lib.vae import (
    VAE,
    VQVAE,
    AutoEncoder,
    Bernoulli,
    CodePrior,
    Gaussian,
    IndependentCodePrior,
    VQVAESampler,
    discretized_logistic_log_prob,
)
from course_lib.zoo import MODELS, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").x[:256]  # uint8 [256, 1, 8, 8]


# --- likelihoods -------------------------------------------------------------------------------------

def test_discretized_logistic_is_a_distribution_over_256_levels_matching_scipy():
    """The 256 probabilities sum to 1 (brute force over every level), each equals the logistic cdf
    difference over its bin (scipy), and extreme means/scales stay finite."""
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_scale in [(0.0, -2.0), (0.7, -5.0), (-0.99, 0.5), (3.0, -4.0), (-2.0, -6.9)]:
        logp = discretized_logistic_log_prob(levels, torch.tensor(mean, dtype=torch.float64),
                                             torch.tensor(log_scale, dtype=torch.float64))
        assert torch.isfinite(logp).all()
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-10)
        dist = stats.logistic(loc=mean, scale=math.exp(log_scale))
        edges = np.concatenate([[-np.inf], (levels[:-1].numpy() + 1 / 255), [np.inf]])
        expected = dist.cdf(edges[1:]) - dist.cdf(edges[:-1])
        big = expected > 1e-12
        np.testing.assert_allclose(logp.exp().numpy()[big], expected[big], rtol=1e-7, atol=1e-15)


def test_bernoulli_and_gaussian_log_prob_against_torch_distributions():
    torch.manual_seed(0)
    logits, x = torch.randn(5, 1, 4, 4), torch.bernoulli(torch.full((5, 1, 4, 4), 0.3))
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(Bernoulli.log_prob(x, logits), expected)
    params, y = torch.randn(6, 4), torch.randn(6, 2)
    expected = torch.distributions.Normal(params[:, :2], (0.5 * params[:, 2:]).exp()).log_prob(y).sum(1)
    torch.testing.assert_close(Gaussian.log_prob(y, params), expected)


def test_stochastic_binarization_draws_each_pixel_with_its_grey_level_as_probability():
    """preprocess: x_bin ~ Bernoulli(x / 255) per pixel, from the global generator (reproducible by seed)."""
    model = VAE((1, 8, 8), latent_dim=2, channels=4)
    x = torch.tensor([0, 64, 128, 191, 255], dtype=torch.uint8).repeat(20_000).view(-1, 1, 1, 5)
    torch.manual_seed(1)
    draws = model.preprocess(x)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    p, freq = x[0, 0, 0].double() / 255, draws.double().mean(0)[0, 0]
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / x.shape[0]).sqrt() + 1e-12).all()
    torch.manual_seed(1)
    assert torch.equal(model.preprocess(x), draws)
    grey = VAE((1, 8, 8), latent_dim=2, channels=4, decoder="logistic").preprocess(x[:1])
    torch.testing.assert_close(grey[0, 0, 0], x[0, 0, 0].float() / 127.5 - 1)


# --- models and training -----------------------------------------------------------------------------

def test_vae_trains_through_fit_and_its_elbo_improves(digits):
    torch.manual_seed(2)
    model = VAE((1, 8, 8), latent_dim=4, channels=8, kl_warmup=20)
    result = fit(model, digits, steps=60, batch_size=64, lr=3e-3, log_every=10, progress=False, device="cpu")
    h = result.history
    assert h["loss"][-1] < 0.8 * h["loss"][0]
    assert h["beta"] == pytest.approx([min(1.0, (s - 4.5) / 20) for s in h["step"]])  # mean over each interval
    # after warm-up the loss is the negative ELBO: recon + kl
    assert h["loss"][-1] == pytest.approx(h["recon"][-1] + h["kl"][-1], rel=1e-5)
    samples = model.sample(5)
    assert samples.shape == (5, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert model.postprocess(samples).dtype == torch.uint8
    nll = -model.iwae_log_prob(digits[:10], k=50)
    assert nll.shape == (10,) and torch.isfinite(nll).all() and (nll > 0).all()


def test_autoencoder_trains_and_cannot_sample(digits):
    torch.manual_seed(3)
    model = AutoEncoder((1, 8, 8), latent_dim=4, channels=8)
    result = fit(model, digits, steps=40, batch_size=64, lr=3e-3, log_every=10, progress=False, device="cpu")
    assert result.history["recon"][-1] < result.history["recon"][0]
    assert not can_sample(model)
    with pytest.raises(CannotSampleError):
        model.sample(2)


def test_vqvae_trains_resets_dead_codes_and_samples_through_a_prior(digits):
    """Codes start bunched near 0 (uniform init in +-1/K), so most are dead; resets revive them."""
    torch.manual_seed(4)
    model = VQVAE((1, 8, 8), num_codes=32, code_dim=4, channels=8, dead_after=5)
    result = fit(model, digits, steps=40, batch_size=64, lr=3e-3, log_every=5, progress=False, device="cpu")
    h = result.history
    assert sum(h["dead_codes_reset"]) > 0 and h["codes_used"][-1] > 2 * h["codes_used"][0]
    assert h["recon"][-1] < h["recon"][0]
    assert not can_sample(model)
    with pytest.raises(CannotSampleError):
        model.sample(2)
    model.eval()
    codes = model.encode_codes(digits)
    assert codes.shape == (256, 2, 2) and codes.dtype == torch.long
    prior = CodePrior(32, (2, 2), embed_dim=8, hidden=16)
    res = fit(prior, codes, steps=30, batch_size=64, lr=1e-2, log_every=10, progress=False, device="cpu")
    assert res.history["loss"][-1] < res.history["loss"][0]
    sampler = VQVAESampler(model, prior)
    assert can_sample(sampler) and sampler.postprocess(sampler.sample(3)).shape == (3, 1, 8, 8)
    bound = model.nll_bound(digits[:8], prior.log_prob)
    uniform = model.nll_bound(digits[:8])
    assert bound.shape == (8,) and torch.isfinite(bound).all() and (uniform > 0).all()


def test_independent_code_prior_is_the_counting_estimate():
    g = torch.Generator().manual_seed(5)
    codes = torch.randint(0, 3, (400, 1, 2), generator=g)
    prior = IndependentCodePrior(4, (1, 2)).fit(codes, alpha=1.0)
    for m in range(2):  # pi_m(k) = (count + 1) / (N + K)
        counts = np.bincount(codes[:, 0, m].numpy(), minlength=4)
        np.testing.assert_allclose(prior.log_pi[m].exp().numpy(), (counts + 1) / (400 + 4), rtol=1e-6)
    x = torch.tensor([[[0, 2]]])
    assert prior.log_prob(x).item() == pytest.approx((prior.log_pi[0, 0] + prior.log_pi[1, 2]).item())
    torch.manual_seed(6)
    draws = prior.sample(20_000)
    freq = np.bincount(draws[:, 0, 0].numpy(), minlength=4) / 20_000
    np.testing.assert_allclose(freq, prior.log_pi[0].exp().numpy(), atol=0.015)


def test_errors_name_the_problem_and_the_fix():
    with pytest.raises(ValueError, match="bernoulli.*logistic"):
        VAE((1, 28, 28), decoder="poisson")
    with pytest.raises(ValueError, match="divisible by 4"):
        VAE((1, 30, 30))
    model = VAE((1, 8, 8), latent_dim=2, channels=4)
    with pytest.raises(ValueError, match="binarized"):
        model.preprocess(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="unconditional"):
        model.loss(model.preprocess(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="conditional"):
        VAE((1, 8, 8), latent_dim=2, channels=4, num_classes=10).sample(3)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        VAE((1, 8, 8), decoder="logistic").preprocess(torch.full((1, 1, 8, 8), 3.0))
    with pytest.raises(TypeError, match="int64"):
        CodePrior(8, (2, 2)).preprocess(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="k must be"):
        model.iwae_log_prob(torch.zeros(1, 1, 8, 8), k=0)


# --- the zoo and the command line --------------------------------------------------------------------

def test_zoo_names_and_2d_points():
    assert {"vae", "autoencoder", "vqvae"} <= set(MODELS)
    vae2d = build_model("vae", (2,), None, latent_dim=2)
    assert vae2d.decoder_name == "gaussian" and vae2d.sample(4).shape == (4, 2)
    assert isinstance(build_model("vqvae", (1, 8, 8), None, num_codes=16), VQVAE)
    with pytest.raises(ValueError, match="unconditional"):
        build_model("vqvae", (1, 8, 8), 10)


def test_cli_trains_a_vae_and_a_vqvae(tmp_path, capsys):
    common = ["--data", "digits", "--n", "200", "--steps", "20", "--batch-size", "50", "--log-every", "10",
              "--device", "cpu", "--sample-n", "8", "--lr", "3e-3"]
    assert main(["train", "--model", "vae", "--out", str(tmp_path / "vae"), "--option", "latent_dim=4",
                 "--option", "channels=8", "--conditional", *common]) == 0
    assert (tmp_path / "vae" / "samples.png").is_file()
    history = json.loads((tmp_path / "vae" / "history.json").read_text())
    assert {"loss", "recon", "kl", "elbo"} <= set(history["history"]) and history["step"] == 20
    tensor = tmp_path / "s.pt"
    assert main(["sample", "--checkpoint", str(tmp_path / "vae" / "checkpoint.pt"), "--n", "4", "--label", "3",
                 "--out", str(tmp_path / "s.png"), "--tensor", str(tensor), "--device", "cpu"]) == 0
    assert torch.load(tensor).shape == (4, 1, 8, 8)
    capsys.readouterr()
    assert main(["train", "--model", "vqvae", "--out", str(tmp_path / "vq"), "--option", "num_codes=16",
                 "--option", "channels=8", *common]) == 0
    assert "cannot sample" in capsys.readouterr().out and not (tmp_path / "vq" / "samples.png").exists()
    assert main(["train", "--model", "vae", "--out", str(tmp_path / "bad"), "--option", "decoder=poisson",
                 *common]) == 1
    assert "decoder='poisson'" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_suite_writes_a_record(tmp_path, offline, mnist_train):
    """benchmarks.run --suite vae --fast: every field the issue asks for, into tmp_path (offline data)."""
    import warnings

    from benchmarks import run as bench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the offline MNIST fallback warns
        path = bench.main(["--suite", "vae", "--fast", "--steps", "3", "--device", "cpu", "--out-dir", str(tmp_path)])
    record = json.loads(path.read_text())
    assert record["suite"] == "vae" and record["steps"] == 3 and record["iwae_k"] == 20
    assert record["nll_iwae_nats"] > 0 and record["nll_iwae_nats"] == pytest.approx(
        record["bpd"] * 784 * math.log(2))
    for key in ("steps_per_s", "cpu_share", "load_average_1min_train", "test_neg_elbo_nats", "train_neg_elbo_nats",
                "n_train", "test_source", "target_met"):
        assert key in record, key
