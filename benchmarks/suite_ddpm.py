"""Suite ``ddpm``: train the DDPM of notebook 06 on MNIST for a fixed budget, then measure it.

    python -m benchmarks.run --suite ddpm              # CPU: 267k-parameter U-Net, 1,500 steps
    python -m benchmarks.run --suite ddpm --fast       # seconds (a tiny network, 10 steps)
    python -m benchmarks.run --suite ddpm --steps 600  # another budget

The model, optimiser and budgets are those of the notebook: a U-Net eps_theta (base 16 channels on
a CPU, 64 on a GPU), linear schedule with T = 1000, L_simple, Adam, EMA weights for sampling. Recorded:

* training speed: steps/s and images/s of ``fit`` (sampling and evaluation excluded);
* sampling speed at T = 1000: one timed call of Algorithm 2 for ``n_samples`` images, samples/s,
  seconds per sample and per network evaluation (the evaluations are counted with a hook);
* the test NLL bound in bits/dim (all T terms, one x_t draw each, on ``bpd_images`` test images);
* classifier-FID, KID, precision/recall, confidence of the samples against the test set, and the
  same numbers for as many real test images (the floor at the same sample size).

``benchmarks.run`` adds the device, host, git commit, date and command.
"""
from __future__ import annotations

import math

import torch


def _budget(args) -> dict:
    gpu = args.device.type == "cuda"
    if args.fast:
        b = dict(base_channels=8, steps=10, batch_size=16, lr=1e-3, ema_decay=0.9, n_samples=8, bpd_images=4,
                 bpd_num_t=20)
    elif gpu:
        b = dict(base_channels=64, steps=10_000, batch_size=128, lr=2e-4, ema_decay=0.9995, n_samples=1000,
                 bpd_images=500, bpd_num_t=None)
    else:
        b = dict(base_channels=16, steps=1500, batch_size=64, lr=1e-3, ema_decay=0.995, n_samples=64,
                 bpd_images=32, bpd_num_t=None)
    if args.steps:
        b["steps"] = args.steps
    return b


def run(args) -> dict:
    from course_lib import evaluate
    from course_lib.data import load_train_test, to_signed
    from course_lib.diffusion import build_ddpm
    from course_lib.train import fit

    device, b = args.device, _budget(args)
    train, test = load_train_test(args.dataset, holdout=1000)
    x_train = to_signed(train.x).to(device)
    model = build_ddpm(tuple(train.x.shape[1:]), base_channels=b["base_channels"], channel_mults=(1, 2, 2), T=1000)
    n_params = sum(p.numel() for p in model.parameters())
    result = fit(model, x_train, steps=b["steps"], batch_size=b["batch_size"], lr=b["lr"], ema_decay=b["ema_decay"],
                 device=device, progress=False, seed=args.seed)
    ema = result.ema

    # sampling at T = 1000: one timed call, network evaluations counted
    calls, drawn = [], []
    gen = torch.Generator(device).manual_seed(args.seed + 1)

    def draw():
        drawn.append(ema.sample(b["n_samples"], generator=gen, progress=False))

    hook = ema.model.register_forward_hook(lambda *_: calls.append(1))
    seconds = evaluate.time_call(draw, warmup=0, repeats=1, device=device)
    hook.remove()
    samples = drawn[0].cpu()

    # the test NLL bound, all T terms (or bpd_num_t random t in fast mode), one x_t draw per term
    x_test = to_signed(test.x[:b["bpd_images"]]).to(device)
    bpd = torch.cat([ema.nll_bits_per_dim(chunk, num_t=b["bpd_num_t"], generator=torch.Generator(device).manual_seed(2))
                     for chunk in x_test.split(50)]).double().cpu()

    # sample quality against the test set; the floor: as many real test images against the same reference
    perm = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(3))
    held, reference = test.x[perm[:len(samples)]], test.x[perm[len(samples):]]
    try:
        classifier = evaluate.load_classifier(device=device, dataset=args.dataset)
    except FileNotFoundError as err:
        quality, floor, note = {}, {}, f"no classifier for {args.dataset}: {err}"
    else:
        opts = dict(real=reference, classifier=classifier, device=device, kid_subset_size=len(samples))
        quality, floor, note = evaluate.evaluate_samples(samples, **opts), evaluate.evaluate_samples(held, **opts), None
    keys = ["fid", "kid", "kid_se", "precision", "recall", "confidence", "classes_covered", "label_entropy_bits"]
    return {
        "model": f"DDPM, U-Net eps_theta ({n_params} parameters, base {b['base_channels']}, mults (1, 2, 2)), "
                 "linear schedule T = 1000, L_simple, Adam, EMA",
        "dataset": args.dataset, "dataset_source": train.source, "n_train": int(len(train.x)),
        "test_source": test.source, "n_test": int(len(test.x)),
        "batch_size": b["batch_size"], "lr": b["lr"], "ema_decay": b["ema_decay"], "steps": result.step,
        "train_wall_time_s": result.wall_time, "steps_per_s": result.steps_per_s,
        "train_images_per_s": result.steps_per_s * b["batch_size"],
        "final_loss": sum(result.history["loss"][-10:]) / len(result.history["loss"][-10:]),
        "sampling": {"T": ema.T, "n_samples": len(samples), "seconds": seconds, "samples_per_s": len(samples) / seconds,
                     "seconds_per_sample": seconds / len(samples), "network_evaluations": len(calls),
                     "seconds_per_network_evaluation": seconds / len(calls)},
        "samples_per_s": len(samples) / seconds,
        "bpd": bpd.mean().item(), "bpd_se": (bpd.std() / math.sqrt(len(bpd))).item() if len(bpd) > 1 else None,
        "bpd_estimator": f"{len(bpd)} test images, " + ("all T terms" if b["bpd_num_t"] is None else
                                                        f"{b['bpd_num_t']} random t") + ", one x_t draw per term",
        "fid": quality.get("fid"), "kid": quality.get("kid"),
        "quality": {k: quality[k] for k in keys if k in quality},
        "real_floor": {k: floor[k] for k in keys if k in floor},
        "quality_reference": f"{len(reference)} real {test.split} images; floor: {len(held)} other real ones",
        "quality_note": note,
    }
