"""Commands ``train-classifier`` and ``evaluate`` of ``python -m course_lib``.

    python -m course_lib train-classifier                 # writes course_lib/assets/mnist_classifier.pt + .json
    python -m course_lib evaluate --samples samples.pt    # FID/KID/precision/recall/mode coverage vs the test set
    python -m course_lib evaluate --floor                 # the same metrics between two halves of real data
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

__all__ = ["add_arguments", "run"]


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "train-classifier":
        parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
        parser.add_argument("--epochs", type=int, default=40)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
        parser.add_argument("--device", default="auto")
        parser.add_argument("--out", type=Path, default=None,
                            help="default: course_lib/assets/<dataset>_classifier.pt (+ .json)")
    else:
        parser.add_argument("--samples", type=Path, help="a .pt file: a tensor [N, 1, 28, 28] (or a dict with 'samples')")
        parser.add_argument("--value-range", choices=["uint8", "[0,1]", "[-1,1]"], default=None,
                            help="range of the samples (default: inferred from dtype and values)")
        parser.add_argument("--real", default="test", help="split used as the real reference (default test)")
        parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"],
                            help="picks the classifier and the real reference images")
        parser.add_argument("--floor", action="store_true", help="also print the real-vs-real floor")
        parser.add_argument("--json", type=Path, default=None, help="write the scores to this JSON file")
        parser.add_argument("--device", default="cpu")


def _train(args) -> int:
    from course_lib.data import load_dataset
    from course_lib.evaluate.classifier import accuracy, checkpoint_path, save_classifier, train_classifier
    from course_lib.runtime import get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    args.out = args.out or checkpoint_path(args.dataset)
    train, test = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    to_signed = lambda x: x.float() / 127.5 - 1  # uint8 -> [-1, 1]
    x, y = to_signed(train.x), train.y
    x_test, y_test = to_signed(test.x), test.y
    data_note = f"{len(x)} training images ({train.source})"
    print(f"training on {data_note}; device {device}", flush=True)
    model, history = train_classifier(x, y, epochs=args.epochs, seed=args.seed, device=device,
                                      x_test=x_test, y_test=y_test)
    test_acc = accuracy(model, x_test, y_test)
    record = {
        "command": (f"python -m course_lib train-classifier --dataset {args.dataset} --epochs {args.epochs} "
                    f"--seed {args.seed} --threads {args.threads} --device {args.device}"),
        "data": data_note,
        "course_data": os.environ.get("COURSE_DATA"),
        "model_selection": "none: the weights after the last epoch (test accuracy is only logged per epoch)",
        "dataset": args.dataset,
        "test_set": f"{len(x_test)} genuine {args.dataset} test images ({test.source})",
        "test_accuracy": test_acc,
        "epochs": args.epochs, "seed": args.seed,
        "history": history,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__, "python": platform.python_version(),
        "device": str(device), "threads": torch.get_num_threads(),
    }
    save_classifier(model, args.out, record)
    print(f"test accuracy {test_acc:.4f}; wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


def _evaluate(args) -> int:
    from course_lib.data import DataFileError, DataUnavailableError, load_dataset
    from course_lib.evaluate import evaluate_samples, real_floor

    if args.samples is None and not args.floor:
        print("nothing to do: pass --samples FILE.pt and/or --floor", file=sys.stderr)
        return 2
    samples = None
    if args.samples is not None:
        if not args.samples.is_file():
            print(f"--samples {args.samples}: no such file", file=sys.stderr)
            return 2
        obj = torch.load(args.samples, map_location="cpu", weights_only=True)
        samples = obj.get("samples") if isinstance(obj, dict) else obj
        if not isinstance(samples, torch.Tensor):
            print(f"{args.samples} holds no tensor (or dict with a 'samples' tensor)", file=sys.stderr)
            return 2
    try:
        real = load_dataset(args.dataset, args.real).x
    except (DataUnavailableError, DataFileError) as err:
        print(f"cannot load the real reference images: {err}", file=sys.stderr)
        return 1
    out = {}
    if samples is not None:
        out["samples"] = evaluate_samples(samples, real, value_range=args.value_range, device=args.device,
                                          dataset=args.dataset)
    if args.floor:
        n = out["samples"]["n_samples"] if "samples" in out else None
        out["real_floor"] = real_floor(real, n=min(n, len(real) // 2) if n else None, device=args.device,
                                       dataset=args.dataset)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


def run(name: str, args) -> int:
    return _train(args) if name == "train-classifier" else _evaluate(args)
