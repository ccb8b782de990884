"""The training contract (course_lib.contract) as fit and the CLI use it: two players with k
discriminator steps, data-dependent initialisation, learning-rate schedules from callbacks,
stopping, preprocessing owned by the model, and models that cannot sample."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from course_lib.__main__ import main  # noqa: E402
from course_lib.checkpoint import load_checkpoint  # noqa: E402
from course_lib.contract import CannotSampleError, GenerativeModel, can_sample, is_trainable  # noqa: E402
from course_lib.gan import MLPGAN, discriminator_loss, generator_loss_non_saturating  # noqa: E402
from course_lib.train import fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RecordingGAN(MLPGAN):
    """MLPGAN on 1D data that records every term it returns, to recompute the logged means."""

    def __init__(self, k):
        super().__init__((1,), latent_dim=2, hidden=16, k=k)
        self.record = []

    def train_step(self, x, y, step, update):
        terms = super().train_step(x, y, step, update)
        self.record.append((step, {k: v.item() for k, v in terms.items()}))
        return terms


def _gan_data(n=256):
    return 3.0 + 0.5 * torch.randn(n, 1, generator=torch.Generator().manual_seed(0))  # N(3, 0.5^2)


def test_gan_without_loss_trains_with_k_discriminator_steps_and_logs_each_term_over_its_steps():
    torch.manual_seed(0)
    gan = RecordingGAN(k=2)
    assert is_trainable(gan) and type(gan).loss is GenerativeModel.loss  # trains without a loss method
    mean_before = gan.sample(2000).mean().item()
    result = fit(gan, _gan_data(), steps=600, batch_size=64, lr=2e-3, log_every=6, grad_clip=None,
                 device="cpu", progress=False)
    steps_with_g = [s for s, terms in gan.record if "g_loss" in terms]
    assert steps_with_g == list(range(2, 601, 2))  # Algorithm 1: one G step after every k = 2 D steps
    # Each logged value is the mean over the steps of its interval that logged the term.
    for i, end in enumerate(result.history["step"]):
        rows = [terms for s, terms in gan.record if end - 6 < s <= end]
        for name in ("d_loss", "g_loss"):
            values = [t[name] for t in rows if name in t]
            assert len(values) == (6 if name == "d_loss" else 3)
            assert result.history[name][i] == pytest.approx(sum(values) / len(values), rel=1e-5)
    # It trained: the generator moved its mass from around 0 to the data's mean 3.
    mean_after = gan.sample(2000).mean().item()
    assert abs(mean_before - 3.0) > 2.0 and abs(mean_after - 3.0) < 0.5, (mean_before, mean_after)


def test_terms_missing_from_a_log_interval_are_nan_in_the_history():
    gan = RecordingGAN(k=3)
    result = fit(gan, _gan_data(), steps=6, batch_size=32, log_every=1, device="cpu", progress=False)
    assert result.history["step"] == [1, 2, 3, 4, 5, 6]
    assert [math.isnan(v) for v in result.history["g_loss"]] == [True, True, False, True, True, False]
    assert not any(math.isnan(v) for v in result.history["d_loss"])


def test_two_optimizers_checkpoint_and_resume_bit_for_bit_after_a_stop(tmp_path):
    def run(path, steps, stop_at=None):
        torch.manual_seed(1)
        gan = RecordingGAN(k=2)

        def stopper(result):
            if result.step == stop_at:
                result.stop = True

        result = fit(gan, _gan_data(), steps=steps, batch_size=32, lr=1e-3, ema_decay=0.9, log_every=4,
                     checkpoint_path=path, callbacks=[stopper], device="cpu", progress=False)
        return gan, result

    _, stopped = run(tmp_path / "a.pt", steps=20, stop_at=7)  # a callback stops the run mid-interval
    assert stopped.step == 7 and stopped.history["step"] == [4, 7]
    saved = load_checkpoint(tmp_path / "a.pt")
    assert saved["step"] == 7 and set(saved["optimizer"]) == {"D", "G"}
    assert all(saved["optimizer"][name]["state"] for name in ("D", "G"))  # both players' Adam moments
    resumed, resumed_result = run(tmp_path / "a.pt", steps=20)
    straight, straight_result = run(tmp_path / "b.pt", steps=20)
    assert resumed_result.step == straight_result.step == 20
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(resumed_result.ema.state_dict().values(), straight_result.ema.state_dict().values()):
        assert torch.equal(a, b)
    # The history differs only in the extra log line written when the run stopped at step 7.
    assert resumed_result.history["step"] == [4, 7, 8, 12, 16, 20]
    assert straight_result.history["step"] == [4, 8, 12, 16, 20]
    assert resumed_result.history["d_loss"][-3:] == straight_result.history["d_loss"][-3:]


def test_update_needs_the_optimizer_name_when_there_are_several():
    class Unnamed(MLPGAN):
        def train_step(self, x, y, step, update):
            return {"d_loss": update(discriminator_loss(self.D(x), self.D(x)))}

    with pytest.raises(ValueError, match=r"needs the optimizer's name, one of \['D', 'G'\]"):
        fit(Unnamed((1,)), _gan_data(8), steps=1, batch_size=8, device="cpu", progress=False)


class ActNormFlow(GenerativeModel):
    """z = (x - loc) * exp(-log_scale) with a standard normal prior: log p(x) = log N(z) - sum log_scale.

    ``lazy=False``: loc and log_scale are set from the data in ``data_init`` (Glow's ActNorm).
    ``lazy=True``: the same initialisation happens inside the first ``loss`` call instead, the way
    many implementations write it, which the EMA copy (made before the first step) cannot see.
    """

    def __init__(self, dim=2, lazy=False):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))
        self.lazy = lazy

    @torch.no_grad()
    def _init_from(self, x):
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0).log())
        self.initialized.fill_(True)

    def data_init(self, x, y=None):
        if not self.lazy:
            self._init_from(x)

    def nll(self, x):
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return (0.5 * z**2 + 0.5 * math.log(2 * math.pi) + self.log_scale).sum(1)  # [N] nats

    def loss(self, x, y=None):
        if self.lazy and not self.initialized:
            self._init_from(x)
        return {"loss": self.nll(x).mean()}


@pytest.mark.parametrize("lazy", [False, True])
def test_ema_follows_data_dependent_initialisation(lazy):
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([40.0, -25.0]) + torch.tensor([8.0, 3.0]) * torch.randn(2048, 2, generator=g)
    torch.manual_seed(0)
    flow = ActNormFlow(lazy=lazy)
    result = fit(flow, x, steps=300, batch_size=256, lr=1e-3, ema_decay=0.999, device="cpu", progress=False)
    with torch.no_grad():
        nll_model, nll_ema = flow.nll(x).mean().item(), result.ema.nll(x).mean().item()
    exact = 0.5 * math.log(2 * math.pi * math.e) * 2 + math.log(8.0 * 3.0)  # entropy of the data's Gaussian
    assert abs(nll_model - exact) < 0.05  # the model itself fits either way
    if lazy:  # control: without the hook the EMA averages uninitialised weights in, while its flag says True
        assert bool(result.ema.initialized) and nll_ema - nll_model > 1.0
    else:
        assert abs(nll_ema - nll_model) < 0.02, (nll_ema, nll_model)


class HalfSquare(nn.Module):
    """loss = ||w||^2 / 2, gradient w: plain SGD gives w_k = (1 - lr_k) w_{k-1}, so lr_k can be read off."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

    def loss(self, x, y=None):
        return {"loss": 0.5 * (self.w**2).sum()}


def _schedule(step):
    return 0.2 * 0.8**step


def test_learning_rate_schedule_from_a_callback_is_applied_and_survives_resume(tmp_path):
    def run(steps, path, ws):
        model = HalfSquare()

        def schedule(result):  # after step k, set the lr of step k + 1
            ws.append((result.step, model.w.detach().clone()))
            for group in result.optimizers["main"].param_groups:
                group["lr"] = _schedule(result.step + 1)

        sgd = torch.optim.SGD(model.parameters(), lr=_schedule(1))
        fit(model, torch.zeros(8, 1), steps=steps, batch_size=4, optimizer=sgd, grad_clip=None,
            callbacks=[schedule], checkpoint_path=path, device="cpu", progress=False)
        return model

    ws, ws_b = [], []
    straight = run(10, tmp_path / "a.pt", ws)
    run(5, tmp_path / "b.pt", ws_b)
    resumed = run(10, tmp_path / "b.pt", ws_b)  # the optimizer is built with lr = schedule(1) again
    w_prev = torch.tensor([1.0, -2.0], dtype=torch.float64)
    for step, w in ws:
        lr_applied = 1 - (w / w_prev)  # from the update itself, both coordinates
        torch.testing.assert_close(lr_applied, torch.full((2,), _schedule(step), dtype=torch.float64))
        w_prev = w
    assert [s for s, _ in ws_b] == list(range(1, 11))
    assert torch.equal(resumed.w, straight.w)


def test_the_model_owns_preprocessing_and_data_stay_uint8_until_then():
    class IntegerTargets(GenerativeModel):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))
            self.seen = []

        def preprocess(self, x):  # a PixelCNN's targets: the pixel values as integers
            self.seen.append(x.dtype)
            return x.long()

        def loss(self, x, y=None):
            assert x.dtype == torch.long and int(x.max()) <= 255
            return {"loss": self.w.sum() * 0 + x.float().mean()}

    model = IntegerTargets()
    x = torch.randint(0, 256, (16, 1, 2, 2), dtype=torch.uint8)
    result = fit(model, x, steps=3, batch_size=8, log_every=1, device="cpu", progress=False)
    assert model.seen == [torch.uint8] * 3 and len(result.history["loss"]) == 3

    class Default(GenerativeModel):  # default preprocess: uint8 -> [-1, 1]
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def loss(self, x, y=None):
            assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
            return {"loss": self.w.sum() * 0 + x.mean()}

    fit(Default(), torch.full((8, 1, 2, 2), 255, dtype=torch.uint8), steps=1, batch_size=8, device="cpu",
        progress=False)


def test_a_model_that_cannot_sample_says_so():
    class Encoder(GenerativeModel):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def loss(self, x, y=None):
            return {"loss": (self.w * x).pow(2).mean()}

    model = Encoder()
    assert is_trainable(model) and not can_sample(model) and can_sample(MLPGAN((2,)))
    fit(model, torch.randn(8, 2), steps=2, batch_size=4, device="cpu", progress=False)  # trains all the same
    with pytest.raises(CannotSampleError, match="Encoder cannot draw samples"):
        fit(model, torch.randn(8, 2), steps=2, batch_size=4, sample_every=1, device="cpu", progress=False)
    assert not is_trainable(GenerativeModel())


def test_gan_losses_match_the_value_function():
    """Independent check: the softplus forms against log D computed from probabilities."""
    l_real, l_fake = torch.tensor([2.0, -0.5, 0.3]), torch.tensor([-1.0, 0.7, 0.0])
    d_real, d_fake = torch.sigmoid(l_real), torch.sigmoid(l_fake)
    value = torch.log(d_real).mean() + torch.log(1 - d_fake).mean()  # V(D, G) on these samples
    torch.testing.assert_close(discriminator_loss(l_real, l_fake), -value)
    torch.testing.assert_close(generator_loss_non_saturating(l_fake), -torch.log(d_fake).mean())


def test_cli_trains_and_samples_a_two_player_model_from_the_zoo(tmp_path, capsys):
    out = tmp_path / "gan"
    train = ["train", "--model", "gan_mlp", "--data", "moons", "--n", "256", "--steps", "40", "--batch-size",
             "32", "--lr", "1e-3", "--option", "k=2", "--option", "hidden=32", "--log-every", "10",
             "--checkpoint-every", "20", "--device", "cpu", "--sample-n", "100"]
    assert main(train + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "d_loss" in printed and "g_loss" in printed
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 40 and set(ckpt["optimizer"]) == {"D", "G"}
    assert ckpt["config"]["options"] == {"k": 2, "hidden": 32} and (out / "samples.png").is_file()
    assert main(["train", *train[1:8], "60", *train[9:], "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 60
    tensor = tmp_path / "s.pt"
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--n", "50", "--out",
                 str(tmp_path / "s.png"), "--tensor", str(tensor), "--device", "cpu"]) == 0
    assert torch.load(tensor).shape == (50, 2)
    assert main(["train", "--model", "gan_mlp", "--data", "moons", "--conditional", "--steps", "1",
                 "--device", "cpu", "--out", str(tmp_path / "c")]) == 1
    assert "gan_mlp is unconditional" in capsys.readouterr().err


def test_the_ddpm_trains_bit_for_bit_as_with_the_fit_before_the_contract():
    """Regression: uint8 data converted by the model's preprocess, the fused EMA and clipping give the
    same weights, EMA and history as the pre-contract fit fed with to_signed(x) (notebook 06's call)."""
    from benchmarks.suite_fit_overhead import _fit_before
    from course_lib.data import load_dataset, to_signed
    from course_lib.diffusion import build_ddpm

    try:
        fit_before = _fit_before()
    except RuntimeError as err:
        pytest.skip(str(err))
    x = load_dataset("digits", "train").x[:256]  # uint8 [256, 1, 8, 8]
    runs = []
    for train, data in [(fit_before, to_signed(x)), (fit, x)]:
        torch.manual_seed(0)
        model = build_ddpm((1, 8, 8), channel_mults=(1, 2))
        result = train(model, data, steps=6, batch_size=32, ema_decay=0.9, log_every=3, device="cpu",
                       progress=False)
        runs.append((model.state_dict(), result.ema.state_dict(), result.history))
    (model_a, ema_a, history_a), (model_b, ema_b, history_b) = runs
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_b) and model_a.keys() >= model_b.keys()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_b)
    assert history_a == history_b


def test_stop_after_ends_the_run_on_wall_time():
    import time

    from course_lib.train import stop_after

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def loss(self, x):
            time.sleep(0.02)
            return {"loss": ((x - self.w) ** 2).mean()}

    x = torch.randn(64, 1)
    result = fit(Slow(), x, steps=1000, batch_size=8, device="cpu", progress=False, callbacks=[stop_after(0.2)])
    assert 5 <= result.step <= 40, result.step  # about 10 steps of 20 ms fit in 0.2 s
    result = fit(Slow(), x, steps=12, batch_size=8, device="cpu", progress=False, callbacks=[stop_after(None)])
    assert result.step == 12


def test_linear_decay_lowers_each_players_lr_from_its_own_start_and_stops_on_time():
    import time

    from course_lib.train import linear_decay

    class TwoPlayers(nn.Module):
        def __init__(self, sleep=0.0):
            super().__init__()
            self.a, self.b, self.sleep = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1)), sleep

        def configure_optimizers(self, lr):
            return {"A": torch.optim.SGD([self.a], lr=lr), "B": torch.optim.SGD([self.b], lr=10 * lr)}

        def train_step(self, x, y, step, update):
            time.sleep(self.sleep)
            return {"a": update(((x - self.a) ** 2).mean(), "A"), "b": update(((x - self.b) ** 2).mean(), "B")}

    seen = []  # (step, lr of A, lr of B) after the schedule ran
    record = lambda r: seen.append((r.step, r.optimizers["A"].param_groups[0]["lr"], r.optimizers["B"].param_groups[0]["lr"]))
    x = torch.randn(64, 1)
    fit(TwoPlayers(), x, steps=11, batch_size=8, lr=0.1, device="cpu", progress=False, grad_clip=None,
        callbacks=[linear_decay(steps=11, final=0.2), record])
    # after step s the schedule sets u = s / 11: the lr of the next step
    for step, lr_a, lr_b in seen:
        u = step / 11
        assert lr_a == pytest.approx(0.1 * (1 - 0.8 * u)) and lr_b == pytest.approx(1.0 * (1 - 0.8 * u)), step
    assert seen[-1][1:] == (pytest.approx(0.02), pytest.approx(0.2))

    result = fit(TwoPlayers(sleep=0.02), x, steps=1000, batch_size=8, device="cpu", progress=False,
                 callbacks=[linear_decay(seconds=0.2)])
    assert 5 <= result.step <= 40, result.step
    assert result.optimizers["A"].param_groups[0]["lr"] < 0.1 * 2e-4  # ended near 0

    with pytest.raises(ValueError, match="exactly one budget"):
        linear_decay()
    with pytest.raises(ValueError, match="exactly one budget"):
        linear_decay(seconds=1, steps=10)
    with pytest.raises(ValueError, match="final"):
        linear_decay(steps=10, final=2.0)
