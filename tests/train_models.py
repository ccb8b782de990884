"""Tiny models for the tests of course_lib.train and the CLI (not a test file itself).

``build_tiny`` follows the model-zoo builder contract, so the CLI test can train it with
``--model train_models:build_tiny``. Run as a script, this module trains the tiny model with
checkpoints and kills its own process with SIGKILL at the end of step ``--kill-at``, before that
step's checkpoint would be written (used by the resume test).
"""
from __future__ import annotations

import argparse
import math
import os
import signal

import numpy as np
import torch
from torch import nn

from course_lib.train import fit


class TinyDenoiser(nn.Module):
    """An MLP that denoises its input: loss = mean (net(x + s * eps, y) - x)^2, eps ~ N(0, I).

    The noise scale s is drawn from NumPy and eps from torch, so an exact resume must restore
    both generators; the label (if any) enters through an embedding.
    """

    def __init__(self, image_shape, num_classes=None, hidden=32):
        super().__init__()
        self.image_shape = tuple(image_shape)
        dim = math.prod(self.image_shape)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.label = nn.Embedding(num_classes, hidden) if num_classes else None
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def denoise(self, x, y=None):
        h = self.net[0](x.flatten(1))
        if self.label is not None and y is not None:
            h = h + self.label(y)
        return self.net[2](self.net[1](h)).view_as(x)

    def loss(self, x, y=None):
        self.calls += 1
        s = 0.1 * (1.0 + float(np.random.rand()))
        eps = torch.randn_like(x)
        mse = (self.denoise(x + s * eps, y) - x).pow(2).mean()
        return {"loss": mse, "noise_scale": torch.tensor(s)}

    @torch.no_grad()
    def sample(self, n, y=None):
        dev = self.net[0].weight.device
        x = torch.randn(n, *self.image_shape, device=dev)
        return self.denoise(x, y).clamp(-1, 1)


def build_tiny(image_shape, num_classes=None, **options):
    """Model-zoo builder for TinyDenoiser."""
    return TinyDenoiser(image_shape, num_classes, **options)


def make_data(n=100, seed=1):
    """(x, y): n random 'images' [n, 1, 2, 2] in [-1, 1] with labels in 0..2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 2, 2, generator=g) * 2 - 1
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


# Settings shared by the killed child run, the resumed run and the uninterrupted run.
RESUME_RUN = dict(steps=20, batch_size=16, lr=1e-2, ema_decay=0.9, log_every=4, checkpoint_every=9,
                  progress=False)


def new_model():
    torch.manual_seed(123)
    return TinyDenoiser((1, 2, 2), num_classes=3)


def _kill_at(kill_at):
    def callback(result):
        if result.step == kill_at:  # callbacks run before the step's checkpoint: the work since the last one is lost
            os.kill(os.getpid(), signal.SIGKILL)

    return callback


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--kill-at", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fit(new_model(), make_data(), checkpoint_path=args.checkpoint, device="cpu",
        callbacks=[_kill_at(args.kill_at)], **RESUME_RUN)
    raise SystemExit("the run was not killed: the kill step was never reached")
