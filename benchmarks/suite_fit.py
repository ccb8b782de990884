"""Suite ``fit``: steps/s of the training loop with on-device batching vs a ``DataLoader``.

For each of two small models (a conv autoencoder, whose steps are compute-bound on a CPU, and an
MLP autoencoder, whose ~1 ms steps let the data path show), three ways to train it with the same
initial weights, data, batch size, optimiser and number of steps, on the same machine:

* ``fit``: ``course_lib.train.fit`` (on-device index-slice batching, as every lecture trains);
* ``loop_batches``: a bare loop over ``course_lib.data.batches`` (the data path of ``fit`` alone);
* ``loop_dataloader``: the same bare loop over ``DataLoader(TensorDataset(x), shuffle=True)``,
  which indexes single samples and collates them, then moves each batch to the device.

``loop_batches`` vs ``loop_dataloader`` isolates the data pipeline; ``fit`` vs ``loop_dataloader``
is what a learner gains (or pays for logging, EMA, ...) by using the course's loop.

Timing on a shared machine: the variants take turns in many short runs (``steps`` each, ``rounds``
times), so a burst of load from other processes hits all three alike; each variant's figure is
the median over its runs, and every run's time is kept in the record.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class TinyAutoencoder(nn.Module):
    """A small convolutional autoencoder with the course's model interface (``loss(x) -> dict``)."""

    def __init__(self, channels: int = 1, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.SiLU(),       # [N, w, 14, 14]
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.SiLU())      # [N, 2w, 7, 7]
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.SiLU(),  # [N, w, 14, 14]
            nn.ConvTranspose2d(width, channels, 4, 2, 1))              # [N, C, 28, 28]

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict:
        return {"loss": F.mse_loss(self.decoder(self.encoder(x)), x)}


class TinyMLPAutoencoder(nn.Module):
    """784 -> 64 -> 784: a step costs about a millisecond on a CPU, so the data path shows."""

    def __init__(self, channels: int = 1, width: int = 64):
        super().__init__()
        d = channels * 28 * 28
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.SiLU(), nn.Linear(width, d))

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict:
        return {"loss": F.mse_loss(self.net(x), x.flatten(1))}


MODELS = {"conv_autoencoder": TinyAutoencoder, "mlp_autoencoder": TinyMLPAutoencoder}


def _bare_loop(model: nn.Module, batch_iter, steps: int, lr: float, device: torch.device) -> float:
    """Train for ``steps`` batches drawn from ``batch_iter()`` (restarted each epoch); return wall seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    done = 0
    _sync(device)
    t0 = time.perf_counter()
    while done < steps:
        for xb in batch_iter():
            xb = xb[0] if isinstance(xb, (list, tuple)) else xb
            loss = model.loss(xb.to(device, non_blocking=True))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    _sync(device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    from course_lib.data import load_dataset

    device = args.device
    steps = args.steps or 30  # per run; each run restarts the data order and (for fit) its setup
    batch_size, lr = 128, 1e-3
    data = load_dataset(args.dataset, "train")
    x_cpu = data.x.float() / 127.5 - 1  # uint8 -> [-1, 1], [N, 1, 28, 28]
    if args.fast:
        x_cpu = x_cpu[:2000]
    x_dev = x_cpu.to(device)

    loader = DataLoader(TensorDataset(x_cpu), batch_size=batch_size, shuffle=True,
                        pin_memory=device.type == "cuda")
    rounds = args.rounds or (1 if args.fast else 15)
    per_model = {name: _measure(cls, args, x_cpu, x_dev, loader, steps, batch_size, lr, rounds)
                 for name, cls in MODELS.items()}
    return {
        "model": {name: f"{cls.__name__} ({per_model[name].pop('parameters')} parameters), MSE loss, Adam"
                  for name, cls in MODELS.items()},
        "dataset": args.dataset, "dataset_source": data.source, "n_train": int(x_cpu.shape[0]),
        "batch_size": batch_size, "steps": steps, "rounds": rounds,
        "timing": f"median wall time of {rounds} interleaved runs of {steps} steps",
        "results": per_model,
        "bpd": None, "fid": None, "kid": None,  # a speed-only suite
    }


def _measure(model_cls, args, x_cpu, x_dev, loader, steps, batch_size, lr, rounds) -> dict:
    """Interleaved timings of fit / bare loop + batches / bare loop + DataLoader for one model class."""
    from course_lib.data import batches
    from course_lib.train import fit

    device = args.device

    def fresh_model() -> nn.Module:
        torch.manual_seed(args.seed)
        return model_cls(channels=x_cpu.shape[1]).to(device)

    def time_fit(warmup: bool = False) -> float:
        model = fresh_model()
        _sync(device)
        t0 = time.perf_counter()
        fit(model, x_dev, steps=3 if warmup else steps, batch_size=batch_size, lr=lr, device=device,
            progress=False, grad_clip=None, amp=False, seed=args.seed)  # the same update as the bare loops
        _sync(device)
        return time.perf_counter() - t0

    variants = {
        "fit": time_fit,
        "loop_batches": lambda warmup=False: _bare_loop(
            fresh_model(), lambda: batches(x_dev, batch_size), 3 if warmup else steps, lr, device),
        "loop_dataloader": lambda warmup=False: _bare_loop(
            fresh_model(), lambda: loader, 3 if warmup else steps, lr, device),
    }
    # Warm-up: a few untimed steps of each variant, so that no measured run pays for first-call costs
    # (allocation, lazy initialisation), which would otherwise land on whichever variant runs first.
    for measure in variants.values():
        measure(warmup=True)
    all_times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            all_times[name].append(measure())
    timings = {name: sorted(t)[len(t) // 2] for name, t in all_times.items()}
    steps_per_s = {k: steps / v for k, v in timings.items()}
    return {
        "parameters": sum(p.numel() for p in fresh_model().parameters()),
        "wall_time_s": timings,
        "steps_per_s": steps_per_s,
        "samples_per_s": {k: v * batch_size for k, v in steps_per_s.items()},
        "ratio_fit_over_dataloader": steps_per_s["fit"] / steps_per_s["loop_dataloader"],
        "ratio_batches_over_dataloader": steps_per_s["loop_batches"] / steps_per_s["loop_dataloader"],
        "wall_time_s_all_runs": all_times,
    }
