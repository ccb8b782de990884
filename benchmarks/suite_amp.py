"""Suite ``amp``: training steps/s of ``fit`` in float32 and with ``amp=True`` (bf16 autocast), side by side.

    python -m benchmarks.run --suite amp --threads 2     # 3 x 2 x 3 runs of 120 steps (not yet timed as a whole)
    python -m benchmarks.run --suite amp --fast          # seconds

Three models of the course at their notebooks' batch sizes: the conditional DCGAN of notebook 04
(batch 64), the gated PixelCNN of notebook 02 (batch 16) and the class-conditional DDPM U-Net of
notebook 07 (base 16, batch 64), on the offline MNIST digits. Float32 and bf16 take turns over
``rounds`` short runs each and every figure is the median, so other load on the machine hits both
alike. The record also keeps each run's mean loss over its last logged steps: at the same steps from
the same seed, the two precisions should train alike.

bf16 is fast only where the hardware has it (``course_lib.runtime.has_fast_bf16``: a CUDA GPU, or a
CPU with AVX512-BF16, AMX or ARM's BF16); elsewhere ``fit`` refuses ``amp=True``, and so does this
suite.
"""
from __future__ import annotations

import statistics

import torch


def _models(fast: bool):
    from course_lib.autoregressive import build_pixelcnn
    from course_lib.diffusion import build_ddpm
    from course_lib.gan.dcgan import build_dcgan

    if fast:
        return {"dcgan": (lambda: build_dcgan((1, 28, 28), num_classes=10, base=8), 16),
                "pixelcnn": (lambda: build_pixelcnn((1, 28, 28), num_classes=10, hidden=8, layers=1), 4),
                "ddpm": (lambda: build_ddpm((1, 28, 28), num_classes=10, base_channels=8), 16)}
    return {"dcgan": (lambda: build_dcgan((1, 28, 28), num_classes=10), 64),
            "pixelcnn": (lambda: build_pixelcnn((1, 28, 28), num_classes=10, hidden=48, layers=5,
                                                dilations=(1, 2, 4, 8, 1), first_kernel=7, kernel=3,
                                                label_dropout=0.25), 16),
            "ddpm": (lambda: build_ddpm((1, 28, 28), num_classes=10, label_dropout=0.15, base_channels=16), 64)}


def run(args) -> dict:
    from course_lib.data import load_train_test
    from course_lib.runtime import has_fast_bf16
    from course_lib.train import fit

    if not has_fast_bf16(args.device):
        raise SystemExit(f"suite amp: {args.device} has no fast bf16 (a CUDA GPU, or a CPU with AVX512-BF16, AMX or "
                         "ARM BF16), so fit refuses amp=True here; run the suite on such a machine")
    train, _ = load_train_test(args.dataset, holdout=1000)
    steps = args.steps or (4 if args.fast else 120)
    rounds = args.rounds or (1 if args.fast else 3)
    results = {}
    for name, (build, batch_size) in _models(args.fast).items():
        runs = {"float32": [], "bf16": []}
        for _ in range(rounds):
            for precision, runs_of in runs.items():
                result = fit(build(), (train.x, train.y.long()), steps=steps, batch_size=batch_size, lr=2e-4,
                             device=args.device, progress=False, seed=args.seed, log_every=10,
                             amp=precision == "bf16")
                history = result.history
                loss_key = "loss" if "loss" in history else "g_loss"
                runs_of.append({"steps_per_s": result.steps_per_s,
                                f"last_{loss_key}": statistics.fmean(history[loss_key][-3:])})
        medians = {p: statistics.median(r["steps_per_s"] for r in rs) for p, rs in runs.items()}
        results[name] = {"batch_size": batch_size, "runs": runs, "steps_per_s": medians,
                         "speedup_bf16_over_float32": medians["bf16"] / medians["float32"]}
    return {"model": {name: m["batch_size"] for name, m in results.items()}, "dataset": args.dataset,
            "dataset_source": train.source, "steps": steps, "rounds": rounds, "results": results,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
