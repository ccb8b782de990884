"""Tests of course_lib.train.fit: exact resume after a kill, NaN stop, EMA, clipping, history."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # the helper module train_models lives beside this file
import train_models  # noqa: E402

from course_lib.checkpoint import load_checkpoint  # noqa: E402
from course_lib.train import EMA, NonFiniteLossError, fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _state(result, model):
    return {
        "params": {k: v.clone() for k, v in model.state_dict().items()},
        "ema": {k: v.clone() for k, v in result.ema.state_dict().items()},
        "history": result.history,
    }


@pytest.mark.slow  # a child process imports torch: several seconds on a busy machine
def test_resume_after_sigkill_is_bit_for_bit(tmp_path):
    ckpt = tmp_path / "run.pt"
    child = subprocess.run(
        [sys.executable, train_models.__file__, "--checkpoint", str(ckpt), "--kill-at", "10"],
        capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert load_checkpoint(ckpt)["step"] == 9  # killed in step 10, after the checkpoint at step 9

    x, y = train_models.make_data()
    resumed_model = train_models.new_model()
    resumed = fit(resumed_model, (x, y), checkpoint_path=ckpt, device="cpu", **train_models.RESUME_RUN)
    full_model = train_models.new_model()
    full = fit(full_model, (x, y), checkpoint_path=tmp_path / "full.pt", device="cpu",
               **train_models.RESUME_RUN)

    # Step 9 is mid-epoch (6 batches of 16 per epoch) and between log steps, so this checks the
    # data order, the pending log terms, the optimizer, EMA, and torch + NumPy RNG restoration.
    assert resumed.step == full.step == 20
    a, b = _state(resumed, resumed_model), _state(full, full_model)
    for part in ("params", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), f"{part} {name} differs after resume"
    assert a["history"] == b["history"]
    assert a["history"]["step"] == [4, 8, 12, 16, 20]
    # The run really learned something, so equality is not equality of untouched weights.
    assert not torch.equal(a["params"]["net.0.weight"], train_models.new_model().state_dict()["net.0.weight"])


def test_resume_without_checkpoint_differs(tmp_path):
    """Control for the test above: a run restarted from scratch at step 9 does not match."""
    x, y = train_models.make_data()
    settings = {**train_models.RESUME_RUN, "checkpoint_every": None}
    m1, m2 = train_models.new_model(), train_models.new_model()
    fit(m1, (x, y), device="cpu", **settings)
    fit(m2, (x, y), device="cpu", **{**settings, "steps": 9})
    fit(m2, (x, y), device="cpu", **{**settings, "steps": 11})  # 9 + 11 steps, but RNG and data order restart
    assert not torch.equal(m1.net[0].weight, m2.net[0].weight)


class NaNAt(nn.Module):
    """Loss w^2 whose term `term` becomes NaN from call `bad_step` on."""

    def __init__(self, bad_step, term="loss"):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.bad_step, self.term, self.calls = bad_step, term, 0

    def loss(self, x, y=None):
        self.calls += 1
        terms = {"loss": (self.w**2).sum() + 0 * x.sum(), "kl": (self.w**2).mean()}
        if self.calls >= self.bad_step:
            terms[self.term] = terms[self.term] * float("nan")
        return terms


@pytest.mark.parametrize("term,log_every", [("loss", 10), ("kl", 1)])
def test_nan_stops_run_and_keeps_last_good_checkpoint(tmp_path, term, log_every):
    ckpt = tmp_path / "nan.pt"
    model = NaNAt(bad_step=12, term=term)
    with pytest.raises(NonFiniteLossError) as err:
        fit(model, torch.zeros(64, 1), steps=30, batch_size=8, checkpoint_path=ckpt, checkpoint_every=5,
            log_every=log_every, device="cpu", progress=False)
    msg = str(err.value)
    assert f"'{term}'" in msg and "at step 12" in msg and "step 10" in msg and str(ckpt) in msg
    # Detection is deferred to log/checkpoint steps, but never past the next checkpoint (15).
    assert model.calls <= 15
    saved = load_checkpoint(ckpt)
    assert saved["step"] == 10
    assert torch.isfinite(saved["model"]["w"]).all()
    assert all(v == v for v in saved["history"]["loss"])  # no NaN in the saved history


def test_ema_matches_closed_form():
    """EMA after n steps = d^n theta_0 + sum_t (1 - d) d^(n-t) theta_t (unrolled recursion)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    model.loss = lambda x, y=None: {"loss": (model(x) - 1).pow(2).mean()}
    snapshots = [model.weight.detach().double().clone()]
    decay, n = 0.8, 7
    def snapshot(result):
        snapshots.append(model.weight.detach().double().clone())

    result = fit(model, torch.randn(40, 3), steps=n, batch_size=8, lr=0.1, ema_decay=decay, device="cpu",
                 progress=False, callbacks=[snapshot])
    expected = decay**n * snapshots[0]
    expected += sum((1 - decay) * decay ** (n - t) * snapshots[t] for t in range(1, n + 1))
    torch.testing.assert_close(result.ema.weight.double(), expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(result.ema.weight.double(), snapshots[-1])  # EMA lags the weights


def test_ema_copies_state_buffers_but_not_constants():
    class Net(nn.BatchNorm1d):
        def __init__(self):
            super().__init__(2)
            self.register_buffer("schedule", torch.zeros(3), persistent=False)  # a constant

    b = Net()
    ema = EMA(b, decay=0.75)
    b.running_mean.fill_(3.0)
    b.schedule.fill_(5.0)  # changed behind the EMA's back: a constant is never copied
    with torch.no_grad():
        b.weight.fill_(2.0)  # the copy's weight is 1
    ema.update()
    torch.testing.assert_close(ema.module.weight, torch.full((2,), 0.75 * 1 + 0.25 * 2))
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 3.0))
    assert ema.module.num_batches_tracked.dtype == torch.long  # integer state is copied too
    torch.testing.assert_close(ema.module.schedule, torch.zeros(3))
    with pytest.raises(ValueError, match="ema_decay must be in"):
        EMA(b, decay=1.5)


class Quadratic(nn.Module):
    """loss = scale * ||w||^2: gradient 2 * scale * w, known in closed form."""

    def __init__(self, scale):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([3.0, -4.0]))
        self.scale = scale

    def loss(self, x, y=None):
        return {"loss": self.scale * (self.w**2).sum() + 0 * x.sum()}


@pytest.mark.parametrize("grad_clip", [0.5, None])
def test_grad_clip_limits_the_step(grad_clip):
    model = Quadratic(scale=100.0)
    w0 = model.w.detach().clone()
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    result = fit(model, torch.zeros(4, 1), steps=1, batch_size=4, optimizer=sgd, grad_clip=grad_clip,
                 log_every=1, device="cpu", progress=False)
    unclipped = 2 * 100.0 * w0  # ||.|| = 200 * 5 = 1000
    assert result.history["grad_norm"] == [pytest.approx(1000.0)]
    step = w0 - model.w.detach()
    if grad_clip is None:
        torch.testing.assert_close(step, unclipped)
    else:  # same direction, norm cut to grad_clip
        torch.testing.assert_close(step, unclipped / 1000.0 * grad_clip)


class Counter(nn.Module):
    """loss = (number of calls so far) + 0 * w, plus a constant term."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def loss(self, x, y=None):
        self.calls += 1
        self.seen_y = y
        return {"loss": self.w.sum() * 0 + self.calls, "const": torch.tensor(3.0)}

    @torch.no_grad()
    def sample(self, n, y=None):
        return torch.randn(n, 1, 2, 2)


def test_history_eval_and_samples():
    model = Counter()
    x, y = torch.zeros(32, 1), torch.arange(32)
    result = fit(model, (x, y), steps=12, batch_size=8, log_every=5, eval_fn=lambda m: {"w": m.w.item()},
                 eval_every=6, sample_every=10, device="cpu", progress=False)
    h = result.history
    assert set(h) == {"step", "loss", "const", "grad_norm"}
    assert h["step"] == [5, 10, 12]
    assert h["loss"] == [3.0, 8.0, 11.5]  # means of 1..5, 6..10, 11..12
    assert h["const"] == [3.0, 3.0, 3.0] and h["grad_norm"] == [0.0, 0.0, 0.0]
    assert result.eval_history == {"step": [6, 12], "w": [0.0, 0.0]}
    assert [s for s, _ in result.samples] == [10, 12] and result.samples[0][1].shape == (16, 1, 2, 2)
    # Same RNG seed for every sample call: grids over training are comparable.
    assert torch.equal(result.samples[0][1], result.samples[1][1])
    assert model.seen_y is not None and model.seen_y.shape == (8,)
    assert result.ema is None and result.step == 12 and result.steps_per_s > 0 and result.wall_time > 0
    assert repr(result).startswith("FitResult(step=12, wall_time=") and "history" not in repr(result)


def test_sampling_does_not_change_training():
    x, y = train_models.make_data()
    settings = dict(steps=10, batch_size=16, device="cpu", progress=False)
    m1, m2 = train_models.new_model(), train_models.new_model()
    fit(m1, (x, y), **settings)
    fit(m2, (x, y), sample_every=3, eval_fn=lambda m: float(m.sample(4).mean()), eval_every=2, **settings)
    assert torch.equal(m1.net[0].weight, m2.net[0].weight)


def test_bad_model_output_is_a_clear_error():
    model = Quadratic(1.0)
    model.loss = lambda x, y=None: (model.w**2).sum()
    with pytest.raises(TypeError, match="must return a dict with a scalar 'loss'"):
        fit(model, torch.zeros(4, 1), steps=1, batch_size=2, device="cpu", progress=False)


def test_resume_with_other_batch_size_is_refused(tmp_path):
    x, y = train_models.make_data()
    fit(train_models.new_model(), (x, y), steps=3, batch_size=16, checkpoint_path=tmp_path / "c.pt",
        device="cpu", progress=False)
    with pytest.raises(RuntimeError, match="batch size 16"):
        fit(train_models.new_model(), (x, y), steps=6, batch_size=8, checkpoint_path=tmp_path / "c.pt",
            device="cpu", progress=False)
    done = fit(train_models.new_model(), (x, y), steps=3, batch_size=16, checkpoint_path=tmp_path / "c.pt",
               device="cpu", progress=False)
    assert done.step == 3  # already trained that far: nothing to do


def test_resume_keeps_the_new_learning_rate(tmp_path):
    x, y = train_models.make_data()
    path = tmp_path / "c.pt"
    fit(train_models.new_model(), (x, y), steps=3, batch_size=16, lr=1e-2, checkpoint_path=path, device="cpu",
        progress=False)
    model = train_models.new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fit(model, (x, y), steps=4, batch_size=16, optimizer=opt, checkpoint_path=path, device="cpu",
        progress=False)
    assert opt.param_groups[0]["lr"] == 1e-4
    assert int(opt.state[model.net[0].weight]["step"]) == 4  # the moments were resumed, not restarted
