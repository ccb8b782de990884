"""Sampling speed: seconds per sample and per network evaluation, on the current device.

GPU kernels run asynchronously, so a timer around ``model.sample(n)`` measures only the launch
unless the device is synchronised before reading the clock; the first call also pays for
allocation and kernel selection, so it is run once untimed (warm-up).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn as nn

from course_lib.runtime import device_summary

__all__ = ["time_per_sample", "time_call"]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 3,
              device: torch.device | str | None = None) -> float:
    """Median wall time in seconds of ``fn()`` after ``warmup`` untimed calls (synchronised on CUDA)."""
    device = torch.device(device) if device is not None else None
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def time_per_sample(sample_fn: Callable[[int], torch.Tensor], n: int, *, network: nn.Module | None = None,
                    warmup: int = 1, repeats: int = 3, device: torch.device | str | None = None) -> dict:
    """Time ``sample_fn(n)`` (e.g. ``lambda n: model.sample(n)``) and report per-sample costs.

    If ``network`` is given (the module the sampler calls at every step, e.g. the U-Net), its
    forward calls are counted with a hook during one timed run, giving the number of network
    evaluations (NFE) per batch and the seconds per evaluation.

    Returns a dict: ``n``, ``seconds`` (median over ``repeats``), ``seconds_per_sample``,
    ``samples_per_s``, ``nfe`` and ``seconds_per_nfe`` (None without ``network``), ``device``.
    """
    if n < 1:
        raise ValueError(f"time_per_sample needs n >= 1 samples, got {n}.")
    if device is None:
        device = next(network.parameters()).device if network is not None else torch.device("cpu")
    device = torch.device(device)
    with torch.no_grad():
        seconds = time_call(lambda: sample_fn(n), warmup=warmup, repeats=repeats, device=device)
        nfe = None
        if network is not None:
            calls = []
            handle = network.register_forward_hook(lambda *_: calls.append(1))
            try:
                sample_fn(n)
            finally:
                handle.remove()
            nfe = len(calls)
    return {
        "n": n, "seconds": seconds, "seconds_per_sample": seconds / n, "samples_per_s": n / seconds,
        "nfe": nfe, "seconds_per_nfe": seconds / nfe if nfe else None, "device": device_summary(device),
    }
