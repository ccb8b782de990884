"""Where and how the course runs: device choice, seeding, fast mode and budgets.

Every notebook starts with::

    from course_lib.runtime import get_device, seed_everything, budget
    device = get_device("auto")
    seed_everything(0)
    steps = budget(full=3000, fast=20)

Environment variables (read at call time, so a test can set them):

* ``COURSE_DEVICE`` -- overrides ``get_device("auto")`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
* ``COURSE_FAST=1`` -- fast mode: every notebook runs in seconds with tiny budgets
  (used by nbval in CI and by the autograder).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "is_fast", "budget", "device_summary", "has_fast_bf16", "cpu_flags"]

_TRUE = {"1", "true", "yes", "on"}


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Return a ``torch.device``.

    ``"auto"`` picks ``COURSE_DEVICE`` if it is set, else CUDA, else Apple MPS, else the CPU.
    Any other value is passed to ``torch.device`` unchanged. Asking for CUDA on a machine
    without it is an error that says so, rather than a crash deep inside a training step.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        override = os.environ.get("COURSE_DEVICE", "").strip()
        if override:
            device = override
        elif torch.cuda.is_available():
            return torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} was requested (COURSE_DEVICE={os.environ.get('COURSE_DEVICE')!r}) "
            "but this machine has no CUDA GPU; unset COURSE_DEVICE or use 'cpu'."
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {device!r} was requested but Apple MPS is not available; use 'cpu'.")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def is_fast() -> bool:
    """True when ``COURSE_FAST`` is set to 1/true/yes/on."""
    return os.environ.get("COURSE_FAST", "").strip().lower() in _TRUE


def budget(full, fast):
    """Pick a number (or anything) for the current mode: ``fast`` when ``COURSE_FAST=1``, else ``full``.

    >>> steps = budget(full=3000, fast=20)
    """
    return fast if is_fast() else full


def device_summary(device: torch.device | str = "auto") -> str:
    """One line naming the device, e.g. ``'cuda (NVIDIA H100 80GB HBM3)'`` or ``'cpu (2 threads)'``.

    Notebooks print it next to their timings, so readers know where a number came from.
    """
    dev = get_device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return dev.type


BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 or AMX; ARM's BF16 extension


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags Linux lists for the first CPU ("flags" on x86, "Features" on ARM).

    An empty set where there is no such file (macOS, Windows).
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def has_fast_bf16(device: torch.device | str = "auto", cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """True where bf16 autocast speeds training up: a CUDA GPU with bf16 tensor cores, or a CPU with
    bf16 instructions.

    For a GPU, that means compute capability 8.0 or later (Ampere, e.g. A100, RTX 30xx, and newer);
    a T4 or V100 (7.x, Colab's free GPUs among them) has no bf16 units. For a CPU, one of
    ``BF16_FLAGS`` in ``cpu_flags(cpuinfo)``. Without them, bf16 is emulated and no faster than
    float32. Where the flags cannot be read, the answer is False, so ``fit(amp=True)`` refuses it there.
    """
    dev = get_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_capability(dev)[0] >= 8
    return dev.type == "cpu" and bool(cpu_flags(cpuinfo) & BF16_FLAGS)
