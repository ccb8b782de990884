"""Suite ``gan``: the DCGAN of notebook 04 trained on MNIST for a fixed wall-clock budget, then measured.

    python -m benchmarks.run --suite gan                # 300 s of training (the issue's budget)
    python -m benchmarks.run --suite gan --fast         # seconds
    python -m benchmarks.run --suite gan --steps 2000   # a fixed number of steps instead of the clock

Training stops after ``seconds`` of wall time (a callback sets ``result.stop``), so the figure is
what a learner gets on this machine in that time. Recorded: steps and steps/s; for 1,000 samples
of the trained generator in eval mode (no EMA: averaged weights do not fit the batch-norm statistics
of the live weights; see notebook 04) (1,000 real test digits beside them as the floor, same reference, same N):
the course classifier's label histogram (every class's share), the fraction of samples it
classifies with p > 0.7, classifier-FID, KID and precision/recall.
"""
from __future__ import annotations

import time

import torch


def _budget(args) -> dict:
    if args.fast:
        return dict(seconds=None, steps=args.steps or 6, base=8, n_samples=64)
    base = 64 if args.device.type == "cuda" else 32  # 32: 0.28M parameters, sized for a CPU
    return dict(seconds=None if args.steps else 300.0, steps=args.steps or 1_000_000, base=base, n_samples=1000)


def run(args) -> dict:
    from course_lib import evaluate
    from course_lib.data import load_train_test
    from course_lib.gan import build_dcgan
    from course_lib.train import fit

    device, b = args.device, _budget(args)
    train, test = load_train_test(args.dataset, holdout=1000)
    torch.manual_seed(args.seed)
    model = build_dcgan(tuple(train.x.shape[1:]), base=b["base"])
    t_start = time.perf_counter()

    def clock(result):
        if b["seconds"] is not None and time.perf_counter() - t_start > b["seconds"]:
            result.stop = True

    result = fit(model, train.x, steps=b["steps"], batch_size=64, lr=2e-4, grad_clip=None,
                 log_every=50, callbacks=[clock], device=device, progress=False, seed=args.seed)
    gen = model.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(args.seed + 1)
        samples = torch.cat([gen.postprocess(gen.sample(250)) for _ in range(-(-b["n_samples"] // 250))])
    samples = samples[:b["n_samples"]].cpu()

    perm = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(3))
    n = min(len(samples), len(test.x) // 2)
    held, reference = test.x[perm[:n]], test.x[perm[n:]]
    classifier = evaluate.load_classifier(device="cpu", dataset=args.dataset)

    def scores(images):
        logits = evaluate.classifier_outputs(images, "uint8", classifier)[1]
        p_max, labels = logits.softmax(dim=1).max(dim=1)
        return {"confident_fraction_p>0.7": float((p_max > 0.7).float().mean()),
                "class_shares": torch.bincount(labels, minlength=10).div(len(labels)).tolist(),
                **{k: v for k, v in evaluate.evaluate_samples(images, reference, value_range="uint8",
                                                             real_value_range="uint8", classifier=classifier,
                                                             kid_subset_size=min(1000, n), dataset=args.dataset).items()
                   if k in ("fid", "kid", "precision", "recall", "classes_covered")}}

    model_scores, floor = scores(samples), scores(held)
    return {
        "model": f"DCGAN base {b['base']} ({sum(p.numel() for p in model.parameters()):,} parameters), "
                 "non-saturating loss, k = 1, Adam(2e-4, 0.5, 0.999), batch 64, no EMA",
        "dataset": args.dataset, "dataset_source": train.source, "n_train": len(train.x),
        "train_seconds_budget": b["seconds"], "steps": result.step, "steps_per_s": result.steps_per_s,
        "train_wall_time_s": result.wall_time, "n_samples": len(samples), "samples": model_scores,
        "real_floor": floor, "fid_over_floor": model_scores["fid"] / max(floor["fid"], 1e-12),
        "min_class_share": min(model_scores["class_shares"]),
        "bpd": None, "fid": model_scores["fid"], "kid": model_scores["kid"],
    }
