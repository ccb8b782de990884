"""Checkpoint files: atomic writes, RNG states, and loading on any device.

A checkpoint written by :func:`course_lib.train.fit` is a dict saved with ``torch.save``::

    {"format": "course_lib.checkpoint/1",
     "step": int,                       # optimizer updates done
     "model": state_dict, "ema": state_dict or None,
     "optimizer": state_dict, a dict of them (GAN), or None,
     "data": {...},                     # where in which epoch the data order was (see train.py)
     "rng": {...},                      # Python, NumPy, torch CPU (and CUDA) generator states
     "history": {...}, "eval_history": {...},
     "config": {...}}                   # fit's settings plus what the caller passed (model name, ...)

Load a trained model (on a CPU laptop, whatever device wrote the file)::

    from course_lib.checkpoint import load_checkpoint
    ckpt = load_checkpoint("runs/ddpm/checkpoint.pt", model, ema=True)  # fills model's weights

Writes are atomic: the file is written to a temporary name in the same directory, flushed to
disk (``fsync``) and renamed over the old one with ``os.replace``. A crash or a full disk
mid-save therefore leaves the previous checkpoint untouched, never half a file.
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "get_rng_state", "set_rng_state"]

FORMAT = "course_lib.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module | None = None,
    map_location: str | torch.device = "cpu",
    ema: bool = False,
) -> dict:
    """Read a checkpoint written by ``fit`` (tensors go to ``map_location``) and return the dict.

    If ``model`` is given, its weights are loaded from the file: the EMA weights when ``ema``
    is true (an error if the run kept no EMA), else the raw training weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; train first (python -m course_lib train ...)"
        )
    try:
        # weights_only: the file holds tensors, numbers, strings, lists and dicts only, so the
        # safe unpickler suffices and a malicious file cannot run code.
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "delete it and train again (or point to an older checkpoint)"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a course_lib checkpoint (no format tag {FORMAT!r})")
    if model is not None:
        key = "ema" if ema else "model"
        if ckpt.get(key) is None:
            raise CheckpointError(f"checkpoint {path} holds no EMA weights; load it with ema=False")
        try:
            model.load_state_dict(ckpt[key])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit this model (built with other options?): {exc}"
            ) from exc
    return ckpt


def get_rng_state() -> dict:
    """The states of every global random generator fit's randomness may come from."""
    np_state = np.random.get_state()  # ('MT19937', keys uint32[624], pos, has_gauss, cached_gaussian)
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators saved by :func:`get_rng_state` (CUDA states only where a GPU exists)."""
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuples(obj):
    # random.setstate needs tuples; a round trip through torch.save may keep them, but be safe.
    return tuple(_as_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj
