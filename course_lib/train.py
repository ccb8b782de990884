"""``fit``: the one training loop every notebook and the command line use.

It knows nothing about the model beyond one method: ``model.loss(x, y=None)`` returns a dict
with a scalar ``"loss"`` to minimise and any other named scalar terms worth plotting (e.g. the
VAE's ``"recon"`` and ``"kl"``). A two-player model (a GAN) passes ``step_fn`` instead and does
its own optimisation; ``fit`` then only loops, logs, keeps the EMA and writes checkpoints.

Example (a DDPM on MNIST, data already in the model's input range [-1, 1])::

    from course_lib.data import load_dataset, to_signed
    from course_lib.train import fit
    x, y = load_dataset("mnist", "train")
    result = fit(model, to_signed(x), steps=2000, batch_size=128, lr=2e-4,   # (x, y) if conditional
                 ema_decay=0.999, sample_every=500, checkpoint_path="runs/ddpm.pt")
    plot_history(result.history)            # from course_lib.plotting
    samples = result.ema.sample(16)

A GAN does its own step (two optimizers); pass them so that checkpoints hold both::

    def gan_step(gan, x, step):                  # x: one batch
        opt_d.zero_grad()
        d_loss = gan.d_loss(x)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = gan.g_loss(len(x))
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}  # tensors: no GPU sync

    fit(gan, x, steps=5000, step_fn=gan_step, optimizer={"G": opt_g, "D": opt_d})

What one step does (lecture notation: theta are the weights, eta the learning rate)::

    terms = model.loss(x, y)                   # under bf16 autocast on CUDA
    terms["loss"].backward()
    g = clip(grad, max_norm=grad_clip)         # g * min(1, grad_clip / ||g||_2)
    theta <- Adam(theta, g, eta)
    theta_ema <- decay * theta_ema + (1 - decay) * theta

Design choices worth knowing:

* No GPU sync per step. ``loss.item()`` waits for the GPU to finish, which would stall the
  queue of kernels every step. The terms are kept as device tensors and read in one transfer
  every ``log_every`` steps; the history holds their mean over those steps. A NaN or inf is
  noticed then (and before every checkpoint), and the error names the first bad step.
* Exact resume. The data order comes from a CPU ``torch.Generator`` seeded from ``seed``; the
  checkpoint stores its state at the start of the current epoch and how many batches of the
  epoch were used, plus every global RNG state, the optimizer, the EMA and the history. A run
  resumed from step k to n ends with the same weights, bit for bit on the CPU, as one run to n.
* Sampling and evaluation run on the EMA model (when there is one) inside
  ``torch.random.fork_rng`` seeded with ``seed``: every sample grid starts from the same noise,
  and switching them on or off does not change the training run.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from course_lib.checkpoint import (
    CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
)
from course_lib.data.batching import batches
from course_lib.runtime import get_device, seed_everything

__all__ = ["fit", "FitResult", "NonFiniteLossError", "ema_update"]


class NonFiniteLossError(FloatingPointError):
    """A logged term became NaN or infinite; the run was stopped."""


@dataclass
class FitResult:
    """What ``fit`` returns (its repr stays one line: the lists are left out)."""

    history: dict[str, list] = field(repr=False)  # term -> values (mean over log_every steps), plus "step"
    eval_history: dict[str, list] = field(repr=False)  # eval_fn's terms -> values, plus "step"
    samples: list = field(repr=False)  # (step, tensor on the CPU) from each sample call
    ema: torch.nn.Module | None = field(repr=False)  # EMA copy of the model (eval mode), or None
    step: int = 0  # optimizer updates done, counting those before a resume
    wall_time: float = 0.0  # seconds this call of fit took
    steps_per_s: float = 0.0  # training steps per second, not counting eval/sample/checkpoints
    checkpoint_path: Path | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta; buffers (e.g. BatchNorm stats) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def fit(
    model: torch.nn.Module,
    data,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-4,
    optimizer: torch.optim.Optimizer | dict | None = None,
    step_fn: Callable | None = None,
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
    amp: bool | str = "auto",
    compile: bool = False,
    seed: int | None = 0,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` for ``steps`` optimizer updates (in total, counting a resumed checkpoint's).

    Args:
        data: a tensor ``x`` or a tuple ``(x, y)``, already in the model's input range. It is
            moved to the device once; ``loss(x, y)`` gets ``y`` when there are labels.
        optimizer: default ``Adam(model.parameters(), lr)``. With ``step_fn`` pass the model's
            optimizers (one, or a dict such as ``{"G": opt_g, "D": opt_d}``) to checkpoint them.
        step_fn: ``step_fn(model, batch, step) -> dict`` of scalar terms; it does its own
            backward and optimizer steps (and grad clipping). For two-player models.
        grad_clip: max global L2 norm of the gradient (None: no clipping); "grad_norm" (before
            clipping) is logged either way.
        ema_decay: keep an EMA copy of the weights (``result.ema``), e.g. 0.999.
        log_every: record the mean of every term over this many steps in ``result.history``.
        eval_fn / eval_every: ``eval_fn(model) -> dict or float``, recorded in ``eval_history``.
        sample_fn / sample_every: ``sample_fn(model) -> Tensor``, default ``model.sample(16)``;
            the results are kept in ``result.samples`` as ``(step, tensor)``.
        callbacks: each is called as ``cb(result)`` at the end of every step (after logging,
            evaluation, sampling and checkpointing); ``result.step`` is the step just done.
        checkpoint_path / checkpoint_every: write a checkpoint every so many steps and at the
            end. With ``resume`` (default) an existing file there is loaded first and training
            continues from its step. ``config`` (e.g. model name and options) is stored in it.
        amp: "auto" = bf16 autocast on CUDA only; True forces it (CUDA only); False turns it off.
        compile: wrap ``model.loss`` in ``torch.compile`` (the first steps are slow while it
            compiles; compiled random ops draw different numbers than eager ones).
        seed: seeds the data order and, for a fresh run, Python/NumPy/torch (None: leave them).
    """
    if steps < 0 or batch_size < 1 or log_every < 1:
        raise ValueError(
            f"need steps >= 0, batch_size >= 1, log_every >= 1; got {steps}, {batch_size}, {log_every}"
        )
    device = get_device(device)
    use_amp = device.type == "cuda" if amp == "auto" else bool(amp)
    if use_amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device (bf16 autocast), got {device}; use amp='auto'")
    if checkpoint_every and checkpoint_path is None:
        raise ValueError("checkpoint_every needs checkpoint_path (where to write the checkpoints)")
    tensors = tuple(t.to(device) for t in ((data,) if isinstance(data, torch.Tensor) else data))
    has_labels = len(tensors) == 2
    if len(tensors) not in (1, 2):
        raise ValueError(f"data must be a tensor x or a tuple (x, y), got a tuple of {len(tensors)}")
    n_rows = tensors[0].shape[0]
    drop_last = n_rows >= batch_size  # equal batch shapes (good for compile), unless the set is tiny

    model.to(device).train()
    if optimizer is None and step_fn is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if ema_decay is not None else None
    loss_fn = torch.compile(model.loss) if compile else model.loss
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()

    gen = torch.Generator()  # CPU generator: the data order, checkpointed
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    result = FitResult(history={"step": []}, eval_history={"step": []}, samples=[], ema=ema, model=model)
    result.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    pending: list[tuple[int, dict]] = []  # (step, terms) since the last log line; tensors on device
    epoch_start, batch_in_epoch, last_saved = gen.get_state(), 0, None
    settings = dict(batch_size=batch_size, lr=lr, grad_clip=grad_clip, ema_decay=ema_decay, seed=seed)

    if resume and result.checkpoint_path is not None and result.checkpoint_path.is_file():
        ckpt = load_checkpoint(result.checkpoint_path, model, map_location=device)
        if ckpt["data"]["rows"] != n_rows or ckpt["config"]["fit"]["batch_size"] != batch_size:
            raise CheckpointError(
                f"checkpoint {result.checkpoint_path} was trained on {ckpt['data']['rows']} rows with batch "
                f"size {ckpt['config']['fit']['batch_size']}; this call has {n_rows} and {batch_size}. "
                "Use the same data and batch size, or another checkpoint_path (or resume=False)."
            )
        if ema is not None:
            if ckpt["ema"] is None:
                raise CheckpointError(f"checkpoint {result.checkpoint_path} has no EMA; pass ema_decay=None")
            ema.load_state_dict(ckpt["ema"])
        _load_optimizer(optimizer, ckpt["optimizer"])
        result.step, last_saved = ckpt["step"], ckpt["step"]
        result.history, result.eval_history = ckpt["history"], ckpt["eval_history"]
        pending = [(s, _as_scalars(terms, s, device)) for s, terms in ckpt["pending"]]
        epoch_start, batch_in_epoch = ckpt["data"]["epoch_start"], ckpt["data"]["batch_in_epoch"]
        set_rng_state(ckpt["rng"])
    elif seed is not None:
        seed_everything(seed)

    def new_epoch(skip: int = 0):
        gen.set_state(epoch_start)  # the permutation is drawn from this state at the first next()
        it = batches(tensors if has_labels else tensors[0], batch_size, generator=gen, drop_last=drop_last)
        for _ in range(skip):  # resume mid-epoch: replay the order, skip the batches already used
            next(it)
        return it

    def save(step: int):
        nonlocal last_saved
        _check_finite(pending, result.checkpoint_path, last_saved)  # never save NaN weights
        save_checkpoint(
            {
                "step": step, "model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                "optimizer": _optimizer_state(optimizer),
                "data": {"rows": n_rows, "epoch_start": epoch_start, "batch_in_epoch": batch_in_epoch},
                "rng": get_rng_state(), "history": result.history, "eval_history": result.eval_history,
                "pending": [(s, _to_floats(t)) for s, t in pending],
                "config": {"fit": settings, **(config or {})},
            },
            result.checkpoint_path,
        )
        last_saved = step

    def run_quietly(fn):  # eval/sample: eval mode, no grad, own RNG stream (training RNG untouched)
        net = ema if ema is not None else model
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
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
        while result.step < steps:
            batch = next(it, None)
            if batch is None:  # epoch over: the generator's state now starts the next epoch
                epoch_start, batch_in_epoch = gen.get_state(), 0
                it = new_epoch()
                batch = next(it)
            batch_in_epoch += 1
            step = result.step + 1
            if step_fn is not None:
                terms = step_fn(model, batch, step)
            else:
                terms = _optimizer_step(model, loss_fn, optimizer, batch, has_labels, grad_clip, autocast)
            if ema is not None:
                ema_update(ema, model, ema_decay)
            pending.append((step, _as_scalars(terms, step, device)))
            result.step = step

            if step % log_every == 0 or step == steps:
                means = _flush(pending, result.checkpoint_path, last_saved)
                for name, value in means.items():
                    result.history.setdefault(name, []).append(value)
                result.history["step"].append(step)
                bar.set_postfix(loss=f"{means.get('loss', next(iter(means.values()))):.4g}", refresh=False)
                pending = []
            evaluate = eval_fn is not None and _due(step, eval_every, steps)
            draw = _due(step, sample_every, steps)
            save_now = checkpoint_path is not None and (step == steps or _due(step, checkpoint_every, steps))
            if evaluate or draw or save_now:  # timed apart: steps_per_s counts training only
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # queued training kernels are not overhead
                t0 = time.perf_counter()
                if evaluate:
                    values = run_quietly(eval_fn)
                    values = values if isinstance(values, dict) else {"eval": values}
                    for name, value in values.items():
                        result.eval_history.setdefault(name, []).append(float(value))
                    result.eval_history["step"].append(step)
                if draw:
                    images = run_quietly(sample_fn or (lambda net: net.sample(16)))
                    result.samples.append((step, images.detach().float().cpu()))
                if save_now:
                    save(step)
                t_other += time.perf_counter() - t0
            for cb in callbacks:
                cb(result)
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


def _optimizer_step(model, loss_fn, optimizer, batch, has_labels, grad_clip, autocast) -> dict:
    x, y = batch if has_labels else (batch, None)
    with autocast:
        terms = loss_fn(x, y) if has_labels else loss_fn(x)
    if not isinstance(terms, dict) or "loss" not in terms:
        raise TypeError(
            f"{type(model).__name__}.loss() must return a dict with a scalar 'loss' (and other named "
            f"terms to log), got {type(terms).__name__}"
        )
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    # clip_grad_norm_ returns the norm before clipping; max_norm=inf measures without clipping.
    max_norm = grad_clip if grad_clip is not None else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return {**terms, "grad_norm": grad_norm}


def _as_scalars(terms: dict, step: int, device) -> dict[str, torch.Tensor]:
    """Detached float32 scalars on the training device (floats from a step_fn are moved there)."""
    if not isinstance(terms, dict) or not terms:
        raise TypeError(f"step {step}: expected a non-empty dict of scalar terms, got {terms!r}")
    out = {}
    for name, value in terms.items():
        value = torch.as_tensor(value.detach() if torch.is_tensor(value) else value)
        if value.numel() != 1:
            raise ValueError(f"step {step}: term {name!r} must be a scalar, got shape {tuple(value.shape)}")
        out[name] = value.reshape(()).to(device=device, dtype=torch.float32)
    return out


def _table(pending) -> tuple[list[str], torch.Tensor]:
    """Stack the pending terms into one float32 CPU table [steps, terms] with a single transfer."""
    names = list(pending[0][1])
    for step, terms in pending:
        if list(terms) != names:
            raise ValueError(f"step {step} logged terms {list(terms)}, earlier steps logged {names}")
    table = torch.stack([torch.stack([terms[n] for n in names]) for _, terms in pending])
    return names, table.cpu()


def _check_finite(pending, checkpoint_path, last_saved) -> tuple[list[str], torch.Tensor] | None:
    if not pending:
        return None
    names, table = _table(pending)
    bad = ~torch.isfinite(table)  # [steps, terms]
    if bad.any():
        i, j = bad.nonzero()[0].tolist()
        kept = (
            f"the last good checkpoint (step {last_saved}) is kept at {checkpoint_path}"
            if last_saved is not None
            else "no checkpoint was written (pass checkpoint_path= and checkpoint_every= to keep one)"
        )
        raise NonFiniteLossError(
            f"term {names[j]!r} is {table[i, j].item()} at step {pending[i][0]}; training stopped and "
            f"{kept}. Try a lower learning rate, gradient clipping (grad_clip=1.0), or check the data range."
        )
    return names, table


def _flush(pending, checkpoint_path, last_saved) -> dict[str, float]:
    names, table = _check_finite(pending, checkpoint_path, last_saved)
    return dict(zip(names, table.mean(dim=0).tolist()))


def _to_floats(terms: dict) -> dict[str, float]:
    return {k: v.item() for k, v in terms.items()}


def _optimizer_state(optimizer):
    if isinstance(optimizer, dict):
        return {k: opt.state_dict() for k, opt in optimizer.items()}
    return optimizer.state_dict() if optimizer is not None else None


def _load_optimizer(optimizer, state) -> None:
    """Load the saved moments and step counts, but keep the learning rate the caller asked for now
    (resuming with a lower lr after a NaN must take effect)."""
    if optimizer is None or state is None:
        return
    optimizers = optimizer if isinstance(optimizer, dict) else {None: optimizer}
    for key, opt in optimizers.items():
        lrs = [group["lr"] for group in opt.param_groups]
        opt.load_state_dict(state[key] if key is not None else state)
        for group, lr in zip(opt.param_groups, lrs):
            group["lr"] = lr
