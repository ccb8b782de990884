"""Suite ``pixelcnn``: train the gated PixelCNN of notebook 02 on MNIST for a fixed WALL TIME, then measure it.

    python -m benchmarks.run --suite pixelcnn                 # 300 s of training, 100 samples
    python -m benchmarks.run --suite pixelcnn --threads 1     # one torch thread (faster on a busy machine)
    python -m benchmarks.run --suite pixelcnn --fast          # seconds

The budget is seconds, not steps, because the target is "bits/dim after 300 s of training on 2
cores" (issue 17). Recorded:

* training: steps, steps/s and images/s of ``fit`` in ``train_seconds`` (evaluation excluded);
* the test NLL in bits/dim (exact: an autoregressive model has no bound) on the genuine MNIST
  test set (all 10,000 digits, or what ``load_train_test`` found), with its standard error;
* sampling: one timed call drawing ``n_samples`` images pixel by pixel, the number of network
  evaluations (``pixel_logits`` calls; each is one pixel's horizontal stack) and seconds per image,
  beside the cost of one training step, and what recomputing the whole network over the whole
  image for every pixel would cost (one full pass, timed, times the number of evaluations);
* the machine's load (``benchmarks.run`` adds the 1-minute load average before and after).
"""
from __future__ import annotations

import math
import os
import time

import torch


def _budget(args) -> dict:
    if args.fast:
        return {"train_seconds": 5.0, "hidden": 8, "layers": 1, "batch_size": 8, "lr": 3e-3, "n_samples": 4, "n_test": 200}
    return {"train_seconds": 300.0, "hidden": 24, "layers": 4, "batch_size": 16, "lr": 4e-3, "n_samples": 100, "n_test": None}


class TimeBudget:
    """A ``fit`` callback for a wall-time budget: the learning rate falls linearly from ``lr`` to
    ``final * lr`` over ``seconds`` (measured from when it is made), then training stops."""

    def __init__(self, seconds: float, lr: float, final: float = 0.1):
        self.seconds, self.lr, self.final, self.t0 = seconds, lr, final, time.perf_counter()
        self.loads = []  # (seconds, 1-minute load average), every 30 s: how busy the machine was

    def __call__(self, result) -> None:
        elapsed = time.perf_counter() - self.t0
        if len(self.loads) <= elapsed // 30:
            self.loads.append((round(elapsed), os.getloadavg()[0]))
        done = elapsed / self.seconds
        for opt in result.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = self.lr * (1 - (1 - self.final) * min(done, 1.0))
        result.stop = done >= 1.0


def run(args) -> dict:
    from course_lib.autoregressive import build_pixelcnn
    from course_lib.data import load_train_test
    from course_lib.train import fit

    device, b = args.device, _budget(args)
    train, test = load_train_test(args.dataset, holdout=1000)
    x_test = test.x if b["n_test"] is None else test.x[:b["n_test"]]
    options = {"hidden": b["hidden"], "layers": b["layers"], "first_kernel": 7, "kernel": 3}
    model = build_pixelcnn(tuple(train.x.shape[1:]), **options)
    n_params = sum(p.numel() for p in model.parameters())
    clock = TimeBudget(b["train_seconds"], b["lr"])
    result = fit(model, train.x, steps=10**9, batch_size=b["batch_size"], lr=b["lr"], device=device,
                 callbacks=[clock], log_every=50, progress=False, seed=args.seed)
    train_seconds = time.perf_counter() - clock.t0

    t0 = time.perf_counter()
    bpd = model.bits_per_dim(x_test, batch_size=250).double()
    eval_seconds = time.perf_counter() - t0

    calls = []
    original = model.net.pixel_logits
    model.net.pixel_logits = lambda *a: (calls.append(1), original(*a))[1]  # count network evaluations
    gen = torch.Generator(device).manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    samples = model.sample(b["n_samples"], generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sample_seconds = time.perf_counter() - t0
    del model.net.pixel_logits
    assert samples.shape[0] == b["n_samples"]

    # what the same loop would cost recomputing the whole network over the whole image for every pixel
    blank = torch.zeros(b["n_samples"], *train.x.shape[1:], device=device)
    with torch.no_grad():
        model.net(blank)
        t0 = time.perf_counter()
        for _ in range(3):
            model.net(blank)
        full_pass_seconds = (time.perf_counter() - t0) / 3

    return {
        "model": f"gated PixelCNN ({n_params} parameters; {options}), 256-way categorical per pixel, Adam",
        "dataset": args.dataset, "dataset_source": train.source, "n_train": len(train.x),
        "test_source": test.source, "n_test": len(x_test),
        "batch_size": b["batch_size"], "lr": f"{b['lr']} falling linearly in time to {b['lr'] / 10}",
        "train_seconds_budget": b["train_seconds"],
        "train_wall_time_s": train_seconds, "load_average_during_training": clock.loads, "steps": result.step, "steps_per_s": result.steps_per_s,
        "train_images_per_s": result.steps_per_s * b["batch_size"],
        "seconds_per_training_step": 1 / result.steps_per_s,
        "final_train_bpd": sum(result.history["bpd"][-4:]) / len(result.history["bpd"][-4:]),
        "bpd": bpd.mean().item(), "bpd_se": (bpd.std() / math.sqrt(len(bpd))).item() if len(bpd) > 1 else None,
        "bpd_note": "exact NLL of the 8-bit test images under the raw (not EMA) weights, nll_of='discrete'",
        "eval_seconds": eval_seconds,
        "sampling": {"n_samples": b["n_samples"], "seconds": sample_seconds,
                     "seconds_per_sample": sample_seconds / b["n_samples"],
                     "network_evaluations": len(calls), "sequential_draws": len(calls),
                     "seconds_per_network_evaluation": sample_seconds / max(len(calls), 1),
                     "full_network_pass_seconds": full_pass_seconds,
                     "full_recompute_estimate_seconds": full_pass_seconds * len(calls),
                     "saving_vs_full_recompute": full_pass_seconds * len(calls) / sample_seconds},
        "samples_per_s": b["n_samples"] / sample_seconds,
    }
