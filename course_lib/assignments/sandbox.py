"""Run cells and hidden calls in a child process (``runner.py``) and read back only plain data.

The parent's side of the sandbox:

* a fresh interpreter per job, in a new session (its own process group), with a scratch working
  directory, a minimal environment (``COURSE_FAST=1``, ``CUDA_VISIBLE_DEVICES=""``, one thread,
  ``HOME`` = scratch: none of the grader's variables or secrets) and a fixed seed;
* resource limits, lowered by the runner before any student code runs (``Limits``);
* a wall-clock timeout on the whole job; when it ends -- by timeout or not -- the whole process
  group is killed, so a forked ``sleep`` or fork loop does not outlive it;
* back come ``status.json`` (untrusted text, size-capped) and ``out_<i>.npz`` files read with
  ``allow_pickle=False`` after checking they are regular files of bounded size.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from course_lib.assignments.checks import TensorInput

RUNNER = Path(__file__).with_name("runner.py")
REPO_ROOT = Path(__file__).resolve().parents[2]  # where `course_lib` can be imported from
MAX_STATUS_BYTES = 1 << 20
MAX_OUTPUT_BYTES = 64 << 20


@dataclass
class Limits:
    """Per-submission limits. ``memory_mb`` is address space: ``import torch`` alone needs ~1 GB."""

    cell_timeout: float = 30.0  # seconds per cell and per graded function (all its hidden cases)
    timeout: float = 120.0  # seconds for the whole submission (wall clock), enforced by the parent
    memory_mb: int = 4096
    fsize_mb: int = 64
    nproc_extra: int = 64  # processes/threads on top of what the user already runs (ignored for root)


@dataclass
class RunResult:
    cells: dict  # cell id -> {"status", "message"} (as reported by the child: untrusted)
    calls: dict  # call index -> {"status", "message", "cases_done"} (untrusted)
    outputs: list  # per call: {"c<case>_<j>": array} or None when nothing readable came back
    returncode: int | None
    timed_out: bool  # killed by the parent's wall-clock timeout
    wall_s: float
    start_s: float | None  # spawn -> runner ready (interpreter + NumPy start-up)
    log_tail: str = ""
    notes: list = field(default_factory=list)


def _user_tasks() -> int:
    """Processes + threads of this user now (RLIMIT_NPROC counts them all)."""
    uid, count = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count


def _environment(scratch: str) -> dict:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "COURSE_FAST": "1",
        "COURSE_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def _read_regular(path: str, cap: int) -> bytes | None:
    """The bytes of a regular file no larger than ``cap`` (never a link, FIFO or device), else None."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            return f.read(cap + 1)[:cap]
    except OSError:
        return None


def _read_outputs(path: str) -> dict | None:
    """Arrays of an ``out_<i>.npz`` written by the child, or None if it is missing or unsafe."""
    raw = _read_regular(path, MAX_OUTPUT_BYTES)
    if raw is None:
        return None
    try:
        import io

        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            if sum(i.file_size for i in z.infolist()) > MAX_OUTPUT_BYTES:
                return None
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception:  # noqa: BLE001 - any malformed file is simply "no output"
        return None


def _read_status(path: str) -> dict:
    raw = _read_regular(path, MAX_STATUS_BYTES)
    try:
        status = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        status = {}
    if not isinstance(status, dict):
        status = {}

    def clean(entries):
        out = {}
        for key, value in entries.items() if isinstance(entries, dict) else []:
            if isinstance(value, dict):
                out[str(key)] = {
                    "status": str(value.get("status", "error"))[:20],
                    "message": str(value.get("message", ""))[:500],
                }
        return out

    ready = status.get("t_ready")
    return {
        "cells": clean(status.get("cells")),
        "calls": clean(status.get("calls")),
        "t_ready": ready if isinstance(ready, float) else None,
    }


def run_job(
    cells: list[dict], calls: list[tuple[str, list[dict]]], limits: Limits, seed: int = 0
) -> RunResult:
    """Run ``cells`` ({"id", "source"}) then each call (function name, list of keyword-argument cases).

    Case values are Python scalars, NumPy arrays or ``TensorInput``s (see ``checks``).
    """
    scratch = tempfile.mkdtemp(prefix="course-grade-")
    try:
        arrays, manifest = {}, []
        for i, (function, cases) in enumerate(calls):
            specs = []
            for c, case in enumerate(cases):
                spec = {}
                for name, value in case.items():
                    key = f"i{i}_c{c}_{name}"
                    kind = (
                        "tensor"
                        if isinstance(value, TensorInput)
                        else "array"
                        if isinstance(value, np.ndarray)
                        else "scalar"
                    )
                    arrays[key] = value.array if kind == "tensor" else np.asarray(value)
                    spec[name] = {"kind": kind, "key": key}
                specs.append(spec)
            manifest.append({"function": function, "cases": specs})
        np.savez(os.path.join(scratch, "inputs.npz"), **arrays)
        nproc = _user_tasks() + limits.nproc_extra
        job = {
            "cells": cells,
            "calls": manifest,
            "cell_timeout": limits.cell_timeout,
            "seed": seed,
            "limits": {
                "memory_mb": limits.memory_mb,
                "cpu_s": int(limits.timeout) + 5,
                "nproc": nproc,
                "fsize_mb": limits.fsize_mb,
            },
        }
        with open(os.path.join(scratch, "job.json"), "w") as f:
            json.dump(job, f)
        t0 = time.time()
        with open(os.path.join(scratch, "output.log"), "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-s", "-B", str(RUNNER), "job.json"],
                cwd=scratch,
                env=_environment(scratch),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:  # the whole group: also what the student's code forked
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        wall = time.time() - t0
        status = _read_status(os.path.join(scratch, "status.json"))
        outputs = [_read_outputs(os.path.join(scratch, f"out_{i}.npz")) for i in range(len(calls))]
        log_tail = (_read_regular(os.path.join(scratch, "output.log"), 1 << 30) or b"")[-2000:]
        start = status["t_ready"] - t0 if status["t_ready"] and 0 <= status["t_ready"] - t0 <= wall else None
        return RunResult(
            status["cells"],
            status["calls"],
            outputs,
            proc.returncode,
            timed_out,
            wall,
            start,
            log_tail.decode("utf-8", "replace"),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
