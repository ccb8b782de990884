"""The grader's private state, ``RESULTS/.grader/`` (mode 0700): never visible inside a sandbox.

* ``seed``: the grading seed the hidden inputs are drawn from. ``--seed`` or
  ``$COURSE_GRADING_SEED`` set it; without either, a random one is drawn on the first run and kept
  here, so that a rerun draws the same inputs (and can reuse its records).
* ``key``: 32 random bytes. Every record is signed with HMAC-SHA256 under this key (``sign``);
  a rerun reuses a record only if its signature verifies (``verify``), so a ``<student>.json``
  written by anyone but this grader is simply graded again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from course_lib.assignments.checks import SEED_VARIABLE, check_seed


def _private_dir(out: Path) -> Path:
    folder = out / ".grader"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def _read_or_create(path: Path, make) -> bytes:
    """The bytes of ``path``, created (exclusively, mode 0600) with ``make()`` if missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    data = make()
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


def resolve_seed(out: Path, given: int | None) -> tuple[int, str]:
    """(grading seed, where it came from): ``given`` (--seed), else $COURSE_GRADING_SEED, else the stored one."""
    if given is not None:
        return check_seed(given, "--seed"), "--seed"
    if os.environ.get(SEED_VARIABLE, "").strip():
        return check_seed(os.environ[SEED_VARIABLE].strip(), SEED_VARIABLE), SEED_VARIABLE
    path = _private_dir(out) / "seed"
    text = _read_or_create(path, lambda: str(secrets.randbelow(2**63)).encode()).decode().strip()
    return check_seed(text, str(path)), f"{path} (drawn on the first run)"


def load_key(out: Path) -> bytes:
    """The signing key of this results folder (created on first use)."""
    key = _read_or_create(_private_dir(out) / "key", lambda: secrets.token_bytes(32))
    if len(key) != 32:
        raise ValueError(f"{out / '.grader' / 'key'} is damaged: delete it and regrade with --force")
    return key


def _digest(key: bytes, record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "signature"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, record: dict) -> dict:
    """``record`` as it reads back from JSON, with a ``signature`` field over everything else in it."""
    record = json.loads(json.dumps(record, default=str))
    return {**record, "signature": _digest(key, record)}


def verify(key: bytes, record: object) -> bool:
    """True when ``record`` is a dict whose signature this key made."""
    if not isinstance(record, dict) or not isinstance(record.get("signature"), str):
        return False
    return hmac.compare_digest(record["signature"], _digest(key, record))
