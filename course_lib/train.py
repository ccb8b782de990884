"""``fit``: the one training loop every notebook and the command line use.

``fit`` knows nothing about a model beyond the training contract of ``course_lib.contract``: the
model says how a stored batch becomes its input (``preprocess``), which optimizers it has
(``configure_optimizers``), what one step does (``train_step``; default: minimise ``loss``) and
whether it initialises itself from data (``data_init``). ``fit`` loops over on-device batches,
logs, keeps the EMA, checkpoints every optimizer and resumes exactly. One example per shape:

One optimizer, one update per step (DDPM, VAE, PixelCNN; the model only defines ``loss``)::

    x, y = load_dataset("mnist", "train")            # uint8 on the device until preprocess
    result = fit(model, x, steps=2000, batch_size=128, lr=2e-4, ema_decay=0.999,
                 sample_every=500, checkpoint_path="runs/ddpm.pt")
    plot_history(result.history); samples = result.ema.sample(16)

Two players, Algorithm 1 of the GAN lecture (k discriminator steps, then one generator step)::

    class GAN(GenerativeModel):
        def configure_optimizers(self, lr):
            return {"D": Adam(self.D.parameters(), lr), "G": Adam(self.G.parameters(), lr)}
        def train_step(self, x, y, step, update):
            d_loss = discriminator_loss(self.D(x), self.D(self.G(noise).detach()))
            terms = {"d_loss": d_loss, "d_grad_norm": update(d_loss, "D")}
            if step % self.k == 0:                 # every k-th step also updates G
                g_loss = generator_loss(self.D(self.G(noise)))
                terms.update(g_loss=g_loss, g_grad_norm=update(g_loss, "G"))
            return terms                           # history: each term's mean over the steps that logged it

Data-dependent initialisation (Glow's ActNorm): define ``data_init(x, y)``; ``fit`` calls it once on
the first batch, before the EMA copy is made, so the EMA starts from the initialised weights.

What one default step does (theta the weights, eta the learning rate)::

    terms = model.loss(model.preprocess(x), y)     # under bf16 autocast only if amp=True (GPU, or CPU with bf16)
    g = grad(terms["loss"]);  g <- g * min(1, grad_clip / ||g||_2)
    theta <- Adam(theta, g, eta);  theta_ema <- decay * theta_ema + (1 - decay) * theta

Design choices worth knowing:

* No GPU sync per step: the terms stay device tensors and are read in one transfer every
  ``log_every`` steps (and before every checkpoint); a NaN or inf stops the run there and the
  error names the first bad step and term. EMA and clipping are fused multi-tensor operations
  over parameter lists cached once (``torch._foreach_*``), not walks over the module tree.
* Exact resume: the data order comes from a CPU ``torch.Generator`` seeded from ``seed``; the
  checkpoint keeps its state at the start of the epoch and the batches used, every global RNG,
  every optimizer, the EMA and the history. A run resumed from step k to n ends with the same
  weights, bit for bit on the CPU, as one run to n.
* Callbacks get the ``FitResult`` after every step (after logging, evaluation and sampling, before
  the checkpoint, so what they change is saved): ``.step``, ``.model``, ``.optimizers`` (to set a
  learning rate), ``.history``; setting ``.stop = True`` ends the run (with a checkpoint).
  Learning rates set by a callback survive a resume; a resume called with another ``lr`` (or
  optimizer) than the checkpoint's first run uses the new one (e.g. a lower lr after a NaN).
* Sampling and evaluation run on the EMA model (when there is one), in eval mode without
  autocast (likelihoods in float32 or better), inside ``torch.random.fork_rng`` seeded with
  ``seed``: every sample grid starts from the same noise and training is not changed.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from course_lib.checkpoint import CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from course_lib.contract import hook, overrides
from course_lib.data.batching import batches
from course_lib.runtime import get_device, has_fast_bf16, seed_everything

__all__ = ["fit", "FitResult", "EMA", "clip_grad_norm", "stop_after", "linear_decay", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A logged term became NaN or infinite; the run was stopped."""


@dataclass
class FitResult:
    """What ``fit`` returns, and what callbacks see after every step (the repr stays one line)."""

    history: dict[str, list] = field(repr=False)  # term -> mean per log interval (NaN: not logged then), "step"
    eval_history: dict[str, list] = field(repr=False)  # eval_fn's terms -> values, plus "step"
    samples: list = field(repr=False)  # (step, tensor on the CPU) from each sample call
    ema: torch.nn.Module | None = field(repr=False)  # EMA copy of the model (eval mode), or None
    optimizers: dict = field(repr=False, default_factory=dict)  # name -> optimizer ("main" if one)
    step: int = 0  # optimizer steps done, counting those before a resume
    wall_time: float = 0.0  # seconds this call of fit took
    steps_per_s: float = 0.0  # training steps per second, not counting eval/sample/checkpoints
    stop: bool = False  # a callback sets this to end the run after the current step
    checkpoint_path: Path | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)


class EMA:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta after every step.

    ``module`` is a frozen copy of the model made at construction (so: after any data-dependent
    initialisation). ``update`` is one fused ``lerp`` over cached parameter lists, plus one fused
    copy of the persistent buffers (state such as BatchNorm statistics or an ActNorm flag);
    non-persistent buffers are constants (a diffusion schedule) and are never copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay} (e.g. 0.999; None turns the EMA off)")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.params = (list(self.module.parameters()), list(model.parameters()))
        state = model.state_dict().keys()
        pairs = [(e, b) for (name, b), e in zip(model.named_buffers(), self.module.buffers()) if name in state]
        self.buffers = ([e for e, _ in pairs], [b for _, b in pairs])

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.params[0], self.params[1], 1.0 - self.decay)
        if self.buffers[0]:
            torch._foreach_copy_(self.buffers[0], self.buffers[1])


def stop_after(seconds: float | None) -> Callable[[FitResult], None]:
    """A callback that ends the run once ``seconds`` of wall time have passed since its first call.

    ``fit(model, x, steps=upper_bound, callbacks=[stop_after(6 * 60)])`` trains for six minutes
    (sampling and evaluation included), so a slower machine trains fewer steps instead of
    overrunning a notebook's budget. ``seconds=None`` never stops (GPU and fast mode keep ``steps``).
    """
    start: list[float] = []

    def callback(result: FitResult) -> None:
        if not start:
            start.append(time.perf_counter())
        if seconds is not None and time.perf_counter() - start[0] >= seconds:
            result.stop = True

    return callback


def linear_decay(seconds: float | None = None, steps: int | None = None,
                 final: float = 0.0) -> Callable[[FitResult], None]:
    """A callback: every optimizer's learning rate falls linearly over a budget, then the run stops.

        lr(u) = lr_0 * (1 - (1 - final) * u),   u = elapsed fraction of the budget in [0, 1]

    lr_0 is each parameter group's lr at the first call (so two players keep their own rates). The
    budget is ``seconds`` of wall time (the run stops when they are spent) or ``steps`` steps (fit
    already stops there). Ending a short budget at a small lr is what lets a fixed-time run finish
    in a minimum instead of bouncing around one (notebook 04's DCGAN: benchmarks/suite_gan.py).
    """
    if (seconds is None) == (steps is None):
        raise ValueError("linear_decay needs exactly one budget: seconds=... (wall time) or steps=...")
    if not 0.0 <= final <= 1.0:
        raise ValueError(f"final is a fraction of the starting lr in [0, 1], got {final}")
    start: dict = {}

    def callback(result: FitResult) -> None:
        if not start:
            start["t"], start["step"] = time.perf_counter(), result.step - 1
            start["lr"] = {name: [g["lr"] for g in opt.param_groups] for name, opt in result.optimizers.items()}
        if seconds is not None:
            u = (time.perf_counter() - start["t"]) / seconds
            result.stop = result.stop or u >= 1.0
        else:
            u = (result.step - start["step"]) / max(steps - start["step"], 1)
        for name, opt in result.optimizers.items():
            for group, lr_0 in zip(opt.param_groups, start["lr"][name]):
                group["lr"] = lr_0 * (1.0 - (1.0 - final) * min(u, 1.0))

    return callback


def clip_grad_norm(params: list[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """||g||_2 over the gradients of ``params``; if ``max_norm`` is given, g <- g * min(1, max_norm / ||g||).

    Returns the norm before clipping as a device scalar: fused over all tensors and, on a GPU,
    without a sync (the scaling always runs there; on the CPU, where reading the norm is free,
    it runs only when the norm exceeds ``max_norm``).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else "cpu")
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if max_norm is not None and (norm.device.type != "cpu" or norm > max_norm):
        torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


def fit(
    model: torch.nn.Module,
    data,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-4,
    optimizer: torch.optim.Optimizer | dict | None = None,
    device: str | torch.device = "auto",
    grad_clip: float | None = 1.0,
    ema_decay: float | None = None,
    log_every: int = 10,
    eval_fn: Callable | None = None,
    eval_every: int | None = None,
    sample_fn: Callable | None = None,
    sample_every: int | None = None,
    callbacks: list[Callable] = (),
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    config: dict | None = None,
    amp: bool = False,
    seed: int | None = 0,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` for ``steps`` steps in total (counting a resumed checkpoint's).

    Args:
        data: a tensor ``x`` or a tuple ``(x, y)`` as stored (uint8 images stay uint8); moved to
            the device once; each batch goes through ``model.preprocess``.
        optimizer: overrides ``model.configure_optimizers(lr)``: one optimizer or a dict of them.
        grad_clip: max global L2 norm of each optimizer's gradient (None: no clipping); the
            default step logs "grad_norm" (before clipping) either way.
        ema_decay: keep an EMA copy of the weights (``result.ema``), e.g. 0.999.
        log_every: record the mean of every term over this many steps in ``result.history``.
        eval_fn / eval_every: ``eval_fn(model) -> dict or float``, recorded in ``eval_history``.
        sample_fn / sample_every: ``sample_fn(model) -> Tensor``, default ``model.sample(16)``;
            kept in ``result.samples`` as ``(step, tensor)``.
        callbacks: ``cb(result)`` after every step (after logging, evaluation and sampling, before
            checkpointing); see the module docstring for what a callback may change.
        checkpoint_path / checkpoint_every: write a checkpoint every so many steps and at the end.
            With ``resume`` (default) an existing file there is loaded first and training continues
            from its step. ``config`` (e.g. model name and options) is stored in it.
        amp: bf16 autocast for the forward passes, on a CUDA GPU of compute capability 8.0+ or a CPU
            with bf16 instructions (``runtime.has_fast_bf16``; off by default).
        seed: seeds the data order and, for a fresh run, Python/NumPy/torch (None: leave them).
    """
    if steps < 0 or batch_size < 1 or log_every < 1:
        raise ValueError(f"need steps >= 0, batch_size >= 1, log_every >= 1; got {steps}, {batch_size}, {log_every}")
    device = get_device(device)
    if amp and not has_fast_bf16(device):
        raise ValueError(f"amp=True (bf16 autocast) needs a CUDA GPU of compute capability 8.0 or later (Ampere) "
                         f"or a CPU with bf16 instructions (AVX512-BF16 or AMX); {device} has neither, so bf16 would "
                         f"be slower than float32: pass amp=False")
    if checkpoint_every and checkpoint_path is None:
        raise ValueError("checkpoint_every needs checkpoint_path (where to write the checkpoints)")
    tensors = tuple(t.to(device) for t in ((data,) if isinstance(data, torch.Tensor) else data))
    if len(tensors) not in (1, 2):
        raise ValueError(f"data must be a tensor x or a tuple (x, y), got a tuple of {len(tensors)}")
    n_rows, has_labels = tensors[0].shape[0], len(tensors) == 2
    drop_last = n_rows >= batch_size  # equal batch shapes, unless the set is tiny

    model.to(device).train()
    preprocess, train_step = hook(model, "preprocess"), hook(model, "train_step")
    optimizers = optimizer if optimizer is not None else hook(model, "configure_optimizers")(lr)
    optimizers = optimizers if isinstance(optimizers, dict) else {"main": optimizers}
    params = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in optimizers.items()}
    settings = dict(batch_size=batch_size, lr=lr, grad_clip=grad_clip, ema_decay=ema_decay, seed=seed,
                    initial_lrs={name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()})
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    no_autocast = torch.autocast(device.type, enabled=False) if amp else nullcontext()  # backward and step

    gen = torch.Generator()  # CPU generator: the data order, checkpointed
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    result = FitResult(history={"step": []}, eval_history={"step": []}, samples=[], ema=None,
                       optimizers=optimizers, model=model)
    result.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    pending: list[tuple[int, dict]] = []  # (step, terms) since the last log line; tensors on the device
    epoch_start, batch_in_epoch, last_saved = gen.get_state(), 0, None

    def new_epoch(skip: int = 0):
        gen.set_state(epoch_start)  # the permutation is drawn from this state at the first next()
        it = batches(tensors if has_labels else tensors[0], batch_size, generator=gen, drop_last=drop_last)
        for _ in range(skip):  # resume mid-epoch: replay the order, skip the batches already used
            next(it)
        return it

    def split(batch):  # (input on the device, labels or None)
        x, y = batch if has_labels else (batch, None)
        return preprocess(x), y

    ckpt = None
    if resume and result.checkpoint_path is not None and result.checkpoint_path.is_file():
        ckpt = _load_for_resume(result.checkpoint_path, model, device, n_rows, settings, optimizers)
    elif seed is not None:
        seed_everything(seed)
    if ckpt is None and overrides(model, "data_init"):
        with torch.no_grad():
            model.data_init(*split(next(new_epoch())))  # the first batch; the data order is unchanged
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    result.ema = ema.module if ema is not None else None
    if ckpt is not None:
        if ema is not None:
            if ckpt["ema"] is None:
                raise CheckpointError(f"checkpoint {result.checkpoint_path} has no EMA; pass ema_decay=None")
            ema.module.load_state_dict(ckpt["ema"])
        result.step = last_saved = ckpt["step"]
        result.history, result.eval_history = ckpt["history"], ckpt["eval_history"]
        pending = [(s, _as_scalars(terms, s, device)) for s, terms in ckpt["pending"]]
        epoch_start, batch_in_epoch = ckpt["data"]["epoch_start"], ckpt["data"]["batch_in_epoch"]
        set_rng_state(ckpt["rng"])

    def update(loss: torch.Tensor, name: str | None = None) -> torch.Tensor:
        if name is None and len(optimizers) > 1:
            raise ValueError(f"update(loss) needs the optimizer's name, one of {sorted(optimizers)}")
        name = name or next(iter(optimizers))
        if name not in optimizers:
            raise KeyError(f"update(loss, {name!r}): the model's optimizers are {sorted(optimizers)}")
        optimizers[name].zero_grad(set_to_none=True)
        with no_autocast:
            loss.backward()
        grad_norm = clip_grad_norm(params[name], grad_clip)
        optimizers[name].step()
        return grad_norm

    def log(step: int):
        nonlocal pending
        means = _means(pending, result.checkpoint_path, last_saved)
        n_logs = len(result.history["step"])
        for name in dict.fromkeys([*result.history, *means]):
            if name != "step":
                result.history.setdefault(name, [math.nan] * n_logs).append(means.get(name, math.nan))
        result.history["step"].append(step)
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:2]}, refresh=False)
        pending = []

    def save(step: int):
        nonlocal last_saved
        _check_finite(pending, result.checkpoint_path, last_saved)  # never save NaN weights
        save_checkpoint({
            "step": step, "model": model.state_dict(), "ema": ema.module.state_dict() if ema else None,
            "optimizer": {name: opt.state_dict() for name, opt in optimizers.items()},
            "data": {"rows": n_rows, "epoch_start": epoch_start, "batch_in_epoch": batch_in_epoch},
            "rng": get_rng_state(), "history": result.history, "eval_history": result.eval_history,
            "pending": [(s, {k: v.item() for k, v in t.items()}) for s, t in pending],
            "config": {"fit": settings, **(config or {})},
        }, result.checkpoint_path)
        last_saved = step

    def timed(fn, *args):  # eval, samples, checkpoints: timed apart, steps_per_s counts training only
        nonlocal t_other
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # queued training kernels are not overhead
        t0 = time.perf_counter()
        out = fn(*args)
        t_other += time.perf_counter() - t0
        return out

    def run_quietly(fn):  # eval/sample: eval mode, no grad, own RNG stream (training RNG untouched)
        net = result.ema if result.ema is not None else model
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            net.eval()
            try:
                return fn(net)
            finally:
                net.train(net is model)

    it = new_epoch(skip=batch_in_epoch)
    bar = tqdm(total=steps, initial=result.step, disable=not progress, desc="fit", dynamic_ncols=True)
    start_step, t_start, t_other = result.step, time.perf_counter(), 0.0
    try:
        while result.step < steps and not result.stop:
            batch = next(it, None)
            if batch is None:  # epoch over: the generator's state now starts the next epoch
                epoch_start, batch_in_epoch = gen.get_state(), 0
                it = new_epoch()
                batch = next(it)
            batch_in_epoch += 1
            step = result.step + 1
            with autocast:
                terms = train_step(*split(batch), step, update)
            if ema is not None:
                ema.update()
            pending.append((step, _as_scalars(terms, step, device)))
            result.step = step

            if step % log_every == 0 or step == steps:
                log(step)
            if eval_fn is not None and _due(step, eval_every, steps):
                values = timed(run_quietly, eval_fn)
                for name, value in (values if isinstance(values, dict) else {"eval": values}).items():
                    result.eval_history.setdefault(name, []).append(float(value))
                result.eval_history["step"].append(step)
            if _due(step, sample_every, steps):
                images = timed(run_quietly, sample_fn or (lambda net: hook(net, "sample")(16)))
                result.samples.append((step, images.detach().float().cpu()))
            for cb in callbacks:  # before the checkpoint, so that what they change is saved
                cb(result)
            if result.stop and pending:  # stopped by a callback: log the rest of the interval
                log(step)
            if checkpoint_path is not None and (result.stop or step == steps or _due(step, checkpoint_every, steps)):
                timed(save, step)
            bar.update(1)
    finally:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the last kernels must finish before the clock stops
    result.wall_time = time.perf_counter() - t_start
    result.steps_per_s = (result.step - start_step) / max(result.wall_time - t_other, 1e-9)
    return result


def _due(step: int, every: int | None, steps: int) -> bool:
    """Every ``every`` steps and at the last step (never when ``every`` is None or 0)."""
    return bool(every) and (step % every == 0 or step == steps)


def _load_for_resume(path: Path, model, device, n_rows: int, settings: dict, optimizers: dict) -> dict:
    """Load model and optimizer states from ``path``; check that data, batch size and optimizers match.

    The optimizers' saved learning rates (a callback's schedule) are kept, unless this call asks for
    other starting learning rates than the checkpoint's first run: then the new ones apply.
    """
    ckpt = load_checkpoint(path, model, map_location=device)
    saved = ckpt["config"]["fit"]
    if ckpt["data"]["rows"] != n_rows or saved["batch_size"] != settings["batch_size"]:
        raise CheckpointError(
            f"checkpoint {path} was trained on {ckpt['data']['rows']} rows with batch size {saved['batch_size']}; "
            f"this call has {n_rows} and {settings['batch_size']}. Use the same data and batch size, or another "
            "checkpoint_path (or resume=False).")
    if not isinstance(ckpt["optimizer"], dict) or set(ckpt["optimizer"]) != set(optimizers):
        raise CheckpointError(f"checkpoint {path} holds the optimizers {sorted(ckpt['optimizer'] or {})}, the "
                              f"model now has {sorted(optimizers)}; resume with the same model, or resume=False")
    keep_saved_lrs = saved.get("initial_lrs") == settings["initial_lrs"]
    for name, opt in optimizers.items():
        lrs = [g["lr"] for g in opt.param_groups]
        opt.load_state_dict(ckpt["optimizer"][name])
        if not keep_saved_lrs:
            for group, group_lr in zip(opt.param_groups, lrs):
                group["lr"] = group_lr
    return ckpt


def _as_scalars(terms: dict, step: int, device) -> dict[str, torch.Tensor]:
    """Detached float32 scalars on the training device (Python floats are moved there)."""
    if not isinstance(terms, dict) or not terms:
        raise TypeError(f"step {step}: train_step must return a non-empty dict of scalar terms, got {terms!r}")
    out = {}
    for name, value in terms.items():
        value = torch.as_tensor(value.detach() if torch.is_tensor(value) else value)
        if value.numel() != 1:
            raise ValueError(f"step {step}: term {name!r} must be a scalar, got shape {tuple(value.shape)}")
        out[name] = value.reshape(()).to(device=device, dtype=torch.float32)
    return out


def _check_finite(pending, checkpoint_path, last_saved):
    """The pending terms as one CPU table [steps, terms] (one transfer), the names and which were logged;
    raises NonFiniteLossError at the first NaN or inf, naming the step and the term."""
    if not pending:
        return None
    names = list(dict.fromkeys(name for _, terms in pending for name in terms))
    missing = torch.tensor(math.nan, device=pending[0][1][names[0]].device)
    table = torch.stack([torch.stack([terms.get(n, missing) for n in names]) for _, terms in pending]).cpu()
    logged = torch.tensor([[n in terms for n in names] for _, terms in pending])
    bad = logged & ~torch.isfinite(table)
    if bad.any():
        i, j = bad.nonzero()[0].tolist()
        kept = (f"the last good checkpoint (step {last_saved}) is kept at {checkpoint_path}" if last_saved is not None
                else "no checkpoint was written (pass checkpoint_path= and checkpoint_every= to keep one)")
        raise NonFiniteLossError(
            f"term {names[j]!r} is {table[i, j].item()} at step {pending[i][0]}; training stopped and {kept}. "
            "Try a lower learning rate, gradient clipping (grad_clip=1.0), or check the data range.")
    return names, table, logged


def _means(pending, checkpoint_path, last_saved) -> dict[str, float]:
    """Each term's mean over the pending steps that logged it."""
    names, table, logged = _check_finite(pending, checkpoint_path, last_saved)
    sums = torch.where(logged, table, 0.0).sum(dim=0)
    return dict(zip(names, (sums / logged.sum(dim=0)).tolist()))
