"""Suite ``flow_matching``: flow matching against DDPM + DDIM at 20 network evaluations (lecture 08's target).

    python -m benchmarks.run --suite flow_matching --threads 1    # CPU: 300 s of training per model
    python -m benchmarks.run --suite flow_matching --fast         # seconds (a tiny network)
    python -m benchmarks.run --suite flow_matching --steps 2000   # a fixed number of steps per model instead

Two models with the same U-Net (notebook 06's: base 16 channels on a CPU, 64 on a GPU, mults (1, 2, 2)),
trained on MNIST for the same wall-clock time each (or the same number of steps with ``--steps``), with the
same batch size, learning rate and EMA:

* flow matching (``FlowMatching``, rectified-flow path, t ~ U[0, 1]), sampled with 20 Euler steps and
  with 10 Heun steps (both 20 network evaluations);
* a DDPM (``build_ddpm``, linear schedule, T = 1000, L_simple), sampled with DDIM (eta = 0) in 20 steps.
  DDIM comes from ``course_lib.diffusion.ddim.ddim_sample`` (lecture 07); without it that row is skipped
  and the record says why.

Recorded for every sampler, on ``n_samples`` unconditional samples from the EMA weights: classifier-FID,
KID, precision/recall by the course classifier against real test digits, the floor (as many other real
test digits), the network evaluations counted by a hook, and seconds per sample. ``target_met``: flow
matching's better 20-evaluation FID is at most DDIM's.
"""
from __future__ import annotations

import os
import time

import torch

QUALITY_KEYS = ("fid", "kid", "kid_se", "precision", "recall", "confidence", "classes_covered")


def _budget(args) -> dict:
    if args.fast:
        b = dict(base_channels=8, seconds=None, steps=10, batch_size=16, n_samples=8)
    elif args.device.type == "cuda":
        b = dict(base_channels=64, seconds=600.0, steps=10_000_000, batch_size=128, n_samples=1000)
    else:
        b = dict(base_channels=16, seconds=300.0, steps=10_000_000, batch_size=64, n_samples=128)
    if args.steps:
        b.update(steps=args.steps, seconds=None)
    return b


def _train(model, x, b, args) -> dict:
    """fit for b["seconds"] of wall time (or b["steps"] steps); returns the EMA model and the training record."""
    from course_lib.train import fit

    lr, decay = (2e-4, 0.9995) if args.device.type == "cuda" else (1e-3, 0.995)
    t_start, cpu_start, load_start = time.perf_counter(), time.process_time(), os.getloadavg()[0]

    def clock(result):
        if b["seconds"] is not None and time.perf_counter() - t_start > b["seconds"]:
            result.stop = True

    result = fit(model, x, steps=b["steps"], batch_size=b["batch_size"], lr=lr, ema_decay=decay, callbacks=[clock],
                 device=args.device, progress=False, seed=args.seed, log_every=50)
    wall = time.perf_counter() - t_start
    losses = result.history["loss"][-10:]
    return result.ema, {"parameters": sum(p.numel() for p in model.parameters()), "steps": result.step,
                        "train_wall_time_s": wall, "steps_per_s": result.steps_per_s, "lr": lr, "ema_decay": decay,
                        "cpu_share": (time.process_time() - cpu_start) / wall,
                        "load_average_1min": [load_start, os.getloadavg()[0]],
                        "final_loss": sum(losses) / len(losses)}


def _draw(network, draw, device) -> tuple[torch.Tensor, dict]:
    """Run draw() once, timed, counting calls of ``network``."""
    calls = []
    hook = network.register_forward_hook(lambda *_: calls.append(1))
    start = time.perf_counter()
    try:
        x = draw()
        if device.type == "cuda":
            torch.cuda.synchronize()
    finally:
        hook.remove()
    seconds = time.perf_counter() - start
    return x, {"network_evaluations": len(calls), "seconds": seconds, "seconds_per_sample": seconds / len(x)}


def run(args) -> dict:
    from course_lib import evaluate
    from course_lib.data import load_train_test, to_uint8
    from course_lib.diffusion import build_ddpm
    from course_lib.diffusion.flow_matching import build_flow_matching

    device, b = args.device, _budget(args)
    train, test = load_train_test(args.dataset, holdout=1000)
    shape, n = tuple(train.x.shape[1:]), b["n_samples"]
    torch.manual_seed(args.seed)
    fm, fm_record = _train(build_flow_matching(shape, base_channels=b["base_channels"]), train.x, b, args)
    torch.manual_seed(args.seed)
    ddpm, ddpm_record = _train(build_ddpm(shape, base_channels=b["base_channels"], T=1000), train.x, b, args)

    gen = lambda: torch.Generator(device).manual_seed(args.seed + 1)  # noqa: E731
    runs = {"flow_matching_euler_20": (fm.net, lambda: fm.sample(n, steps=20, method="euler", generator=gen())),
            "flow_matching_heun_10": (fm.net, lambda: fm.sample(n, steps=10, method="heun", generator=gen()))}
    try:
        from course_lib.diffusion.ddim import ddim_sample
    except ImportError as err:
        ddim_note = f"DDIM row skipped: course_lib.diffusion.ddim.ddim_sample is not available ({err})"
        print(ddim_note)
    else:
        ddim_note = None
        runs["ddim_20"] = (ddpm.model, lambda: ddim_sample(ddpm, n, steps=20, eta=0.0, generator=gen()))

    perm = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(3))
    held, reference = test.x[perm[:n]], test.x[perm[n:]]
    classifier = evaluate.load_classifier(device=device, dataset=args.dataset)
    opts = dict(real=reference, classifier=classifier, device=device, kid_subset_size=n, dataset=args.dataset)
    samplers = {}
    for name, (network, draw) in runs.items():
        x, timing = _draw(network, draw, device)
        quality = evaluate.evaluate_samples(to_uint8(x.clamp(-1, 1).cpu()), **opts)
        samplers[name] = {**timing, **{k: quality[k] for k in QUALITY_KEYS}}
    floor = evaluate.evaluate_samples(held, **opts)
    best_fm = min(samplers["flow_matching_euler_20"]["fid"], samplers["flow_matching_heun_10"]["fid"])
    return {
        "model": f"flow matching vs DDPM (+DDIM), the same U-Net (base {b['base_channels']}, mults (1, 2, 2)), "
                 f"Adam, EMA, batch {b['batch_size']}, "
                 + (f"{b['seconds']:.0f} s of training each" if b["seconds"] else f"{b['steps']} steps each"),
        "dataset": args.dataset, "dataset_source": train.source, "n_train": int(len(train.x)),
        "test_source": test.source, "batch_size": b["batch_size"], "train_seconds_budget": b["seconds"],
        "steps": {"flow_matching": fm_record["steps"], "ddpm": ddpm_record["steps"]},
        "training": {"flow_matching": fm_record, "ddpm": ddpm_record},
        "n_samples": n, "samplers": samplers, "ddim_note": ddim_note,
        "real_floor": {k: floor[k] for k in QUALITY_KEYS},
        "fid": best_fm,
        "target": "flow matching with 20 network evaluations at least as good (classifier-FID) as DDIM with 20",
        "target_met": None if "ddim_20" not in samplers else bool(best_fm <= samplers["ddim_20"]["fid"]),
        "quality_reference": f"{len(reference)} real {test.split} images; floor: {n} other real ones",
    }
