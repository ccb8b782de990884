"""The ``train`` and ``sample`` commands of ``python -m course_lib``.

::

    python -m course_lib train --model ddpm --data mnist --steps 20000 --out runs/ddpm
    python -m course_lib train --model ddpm --data mnist --steps 40000 --out runs/ddpm --resume
    python -m course_lib sample --checkpoint runs/ddpm/checkpoint.pt --n 64 --out samples.png

    python -m course_lib train --model gan_mlp --data moons --steps 3000 --lr 1e-3 --option k=2 --out runs/gan

``train`` writes ``OUT/checkpoint.pt`` (every ``--checkpoint-every`` steps and at the end),
``OUT/history.json`` (the loss curves, speed and provenance) and ``OUT/samples.png`` (a grid
from the EMA model, for models that can sample). The data stay as stored (uint8 images) on the
device; the model's own ``preprocess`` converts each batch, and its own ``train_step`` and
optimizers decide how it trains (``course_lib.contract``), so one command trains every zoo model,
two-player ones included. The checkpoint records the model name, its build options and the data
shape, so ``sample`` can rebuild the model on any device from the file alone.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import torch

from course_lib.checkpoint import CheckpointError, load_checkpoint
from course_lib.contract import can_sample, hook
from course_lib.runtime import device_summary, get_device, seed_everything

__all__ = ["add_arguments", "run"]


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    arg = parser.add_argument
    if name == "train":
        arg("--model", required=True, help="zoo name (e.g. ddpm) or 'package.module:function'")
        arg("--data", required=True, help="data set name known to load_dataset (mnist, cifar10, moons, ...)")
        arg("--out", required=True, type=Path, help="run folder: checkpoint.pt, history.json, samples.png")
        arg("--steps", type=int, default=1000, help="total optimizer steps (default 1000)")
        arg("--batch-size", type=int, default=128)
        arg("--lr", type=float, default=2e-4)
        arg("--ema", type=float, default=0.999, help="EMA decay of the weights; 0 turns it off")
        arg("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 turns clipping off")
        arg("--conditional", action="store_true", help="give the model the class labels")
        arg("--option", action="append", default=[], metavar="KEY=VALUE",
            help="builder option, e.g. --option base_channels=64 (repeatable)")
        arg("--n", type=int, default=None, help="train on a random subset of n examples")
        arg("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
        arg("--checkpoint-every", type=int, default=500)
        arg("--log-every", type=int, default=50)
        arg("--sample-n", type=int, default=64, help="images in the final samples.png")
        arg("--amp", action="store_true", help="bf16 autocast for the forward passes (an Ampere-or-later CUDA GPU, or a CPU with bf16 "
                                                 "instructions: about 1.5x faster there)")
    else:
        arg("--checkpoint", required=True, type=Path, help="checkpoint.pt written by `train`")
        arg("--out", required=True, type=Path, help="PNG file for the sample grid")
        arg("--n", type=int, default=64, help="number of samples")
        arg("--label", type=int, default=None,
            help="conditional models: class of every sample (default: classes 0, 1, 2, ... in turn)")
        arg("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
        arg("--tensor", type=Path, default=None,
            help="also save the samples as a .pt tensor (images as uint8, what `evaluate` scores)")
    arg("--device", default="auto", help="auto, cpu, cuda, mps (COURSE_DEVICE overrides auto)")
    arg("--seed", type=int, default=0)


def run(name: str, args) -> int:
    try:
        return _train(args) if name == "train" else _sample(args)
    except (CheckpointError, ValueError, TypeError, KeyError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = ast.literal_eval(value)  # numbers, lists, True/False, quoted strings
        except (ValueError, SyntaxError):
            options[key] = value  # a bare word such as cosine
    return options


def _train(args) -> int:
    from course_lib.data import load_dataset
    from course_lib.train import fit
    from course_lib.zoo import build_model

    ckpt_path = args.out / "checkpoint.pt"
    if ckpt_path.exists() and not args.resume:
        raise ValueError(
            f"{args.out} already holds a checkpoint; pass --resume to continue it or choose another --out"
        )
    data = load_dataset(args.data, "train", n=args.n, seed=args.seed)
    x = data.x  # as stored: uint8 images (the model's preprocess converts each batch) or 2D points
    num_classes = None
    if args.conditional:
        num_classes = len(data.classes) if data.classes else int(data.y.max()) + 1
    config = {"model": args.model, "options": _parse_options(args.option), "image_shape": list(x.shape[1:]),
              "num_classes": num_classes, "data": args.data, "data_source": data.source}
    if args.resume and ckpt_path.exists():
        saved = load_checkpoint(ckpt_path)["config"]
        keys = ("model", "options", "image_shape", "num_classes", "data")
        differ = [k for k in keys if saved.get(k) != config[k]]
        if differ:
            raise ValueError(f"--resume: {ckpt_path} was trained with other settings ({', '.join(differ)}): "
                             + "; ".join(f"{k}: {saved.get(k)!r} vs now {config[k]!r}" for k in differ))
    model = build_model(args.model, tuple(x.shape[1:]), num_classes, **config["options"])
    device = get_device(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {n_params:,} parameters on {device_summary(device)}; data: {data.source}")
    try:
        result = fit(
            model, (x, data.y) if args.conditional else x, steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, device=device, grad_clip=args.grad_clip or None, ema_decay=args.ema or None,
            log_every=args.log_every, checkpoint_path=ckpt_path, checkpoint_every=args.checkpoint_every,
            resume=args.resume, config=config, seed=args.seed, amp=args.amp,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last checkpoint is {ckpt_path}: continue with --resume", file=sys.stderr)
        return 130
    summary = {"step": result.step, "steps_per_s": result.steps_per_s, "wall_time_s": result.wall_time,
               "device": device_summary(device), "config": config,
               "history": result.history, "eval_history": result.eval_history}
    (args.out / "history.json").write_text(json.dumps(summary, indent=1))
    written = [ckpt_path, args.out / "history.json"]
    if can_sample(model):
        net = result.ema if result.ema is not None else model
        samples = _draw(net, args.sample_n, num_classes, None, args.seed, device)
        _save_picture(samples, args.out / "samples.png", nrow=num_classes)
        written.append(args.out / "samples.png")
    else:
        print(f"{type(model).__name__} cannot sample on its own: no samples.png")
    last = {k: f"{v[-1]:.4g}" for k, v in result.history.items() if k != "step" and v}
    print(f"step {result.step}: {', '.join(f'{k} {v}' for k, v in last.items())}; "
          f"{result.steps_per_s:.1f} steps/s; wrote {', '.join(map(str, written))}")
    return 0


def _sample(args) -> int:
    from course_lib.zoo import build_model

    device = get_device(args.device)
    config = load_checkpoint(args.checkpoint)["config"]
    if "model" not in config:
        raise CheckpointError(
            f"{args.checkpoint} records no model name (not written by `python -m course_lib train`?); "
            "load it in Python with course_lib.checkpoint.load_checkpoint(path, model)"
        )
    shape, num_classes = tuple(config["image_shape"]), config["num_classes"]
    model = build_model(config["model"], shape, num_classes, **config["options"])
    if not can_sample(model):
        raise ValueError(f"{config['model']} ({type(model).__name__}) cannot draw samples on its own "
                         "(e.g. a VQ-VAE's first stage needs a prior over its codes)")
    use_ema = not args.no_ema and config["fit"]["ema_decay"] is not None
    load_checkpoint(args.checkpoint, model, map_location=device, ema=use_ema)
    model.to(device).eval()
    samples = _draw(model, args.n, num_classes, args.label, args.seed, device)
    _save_picture(samples, args.out, nrow=num_classes if args.label is None else None)
    if args.tensor is not None:
        args.tensor.parent.mkdir(parents=True, exist_ok=True)
        torch.save(samples, args.tensor)
    print(f"wrote {args.n} samples ({'EMA' if use_ema else 'raw'} weights of {config['model']}) to {args.out}"
          + (f" and {args.tensor}" if args.tensor else ""))
    return 0


def _draw(model, n: int, num_classes: int | None, label: int | None, seed: int, device) -> torch.Tensor:
    """n samples on the CPU, through the model's ``postprocess`` (images as uint8); conditional models get
    class `label`, or the classes in turn."""

    seed_everything(seed)
    y = None
    if num_classes:
        if label is not None and not 0 <= label < num_classes:
            raise ValueError(f"--label must be in 0..{num_classes - 1}, got {label}")
        y = torch.arange(n, device=device) % num_classes  # classes in turn (a column each, see _save_picture)
        if label is not None:
            y = torch.full_like(y, label)
    with torch.no_grad():
        return hook(model, "postprocess")(model.sample(n, y)).detach().cpu()


def _save_picture(samples: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """An image grid for image samples (``nrow`` per row), a scatter plot for 2D points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 2:
        from matplotlib.figure import Figure

        from course_lib.plotting import scatter_2d

        fig = Figure(figsize=(4, 4))
        scatter_2d(samples, ax=fig.add_subplot())
        fig.savefig(path, dpi=100)
    else:
        from course_lib.plotting import save_grid_png

        save_grid_png(samples, path, nrow=nrow, scale=max(1, 64 // samples.shape[-1]))
