"""Mini-batches as index slices of tensors that already live on the device.

MNIST (47 MB as uint8) and CIFAR-10 (150 MB) fit in any GPU's memory, so the course never
uses a per-sample ``DataLoader`` for them: the whole tensor is moved to the device once and
each batch is ``x[idx]`` for a slice ``idx`` of a random permutation. On a GPU this removes
the data pipeline from the profile; ``benchmarks/`` measures the difference.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

__all__ = ["batches"]


def batches(
    data: torch.Tensor | Sequence[torch.Tensor],
    batch_size: int,
    shuffle: bool = True,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor | tuple[torch.Tensor, ...]]:
    """Yield one epoch of mini-batches.

    Args:
        data: a tensor ``[N, ...]`` or a tuple of tensors with the same first dimension
            (e.g. ``(x, y)``); each batch has the same structure.
        batch_size: rows per batch (the last batch is smaller unless ``drop_last``).
        shuffle: draw a new random permutation of the rows for this epoch.
        device: move the tensors there first (a no-op when they already live there).
        generator: a CPU ``torch.Generator`` for the permutation, so that an epoch's order is
            reproducible and can be checkpointed (``fit`` uses this to resume exactly).
        drop_last: skip a final batch smaller than ``batch_size``.
    """
    single = isinstance(data, torch.Tensor)
    tensors = (data,) if single else tuple(data)
    if not tensors:
        raise ValueError("batches() got no tensors; pass a tensor or a tuple such as (x, y).")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"batches(): tensors disagree on the number of rows: {[t.shape[0] for t in tensors]}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if device is not None:
        tensors = tuple(t.to(device) for t in tensors)
    dev = tensors[0].device
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(dev)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        out = tuple(t[idx] for t in tensors)
        yield out[0] if single else out
