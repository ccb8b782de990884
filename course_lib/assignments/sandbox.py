"""Run cells and hidden calls in a sandboxed child (``runner.py``) and read back only plain data.

The parent's side. Each job runs in its own bubblewrap sandbox (``bwrap``, Linux):

* its own PID namespace: when the runner ends, is killed or times out, every process it started
  dies with it, ``setsid`` or not, and it cannot see the grader's processes (no host ``/proc``);
* its own user, network (none), IPC and UTS namespaces; no capabilities; no nested namespaces;
* a filesystem made of nothing but the system's ``/usr``, the Python installation and the
  ``course_lib`` package, all read-only, and an empty size-limited ``/tmp`` and working folder
  (``/home/student``). Nothing else of the host exists inside: not ``solutions/``, not the other
  submissions, not the results folder, not even the grader's temporary files;
* a minimal environment (``COURSE_FAST=1``, ``CUDA_VISIBLE_DEVICES=""``, one thread) and a fixed seed;
* limits for the whole job: memory, process count and CPU share through a cgroup where the grader
  can make one (``cgroup``), else per process; CPU seconds, address space and file size per
  process (the runner's rlimits); the wall clock (``Limits.timeout``), enforced here;
* the job and its inputs come in, and results come back, through unnamed files that only this
  process holds, passed as file descriptors; the report file is size-limited and parsed as
  untrusted frames (``parse_reports``); the runner's stdout and stderr go to another unnamed
  file, of which only the tail is kept.

Without bubblewrap the grader refuses to run untrusted code (``SandboxUnavailable``) unless the
instructor passes ``--unsafe-no-sandbox``: then the child is a plain process in a new session with
the same rlimits and channels, which a hostile submission can escape (docs/grading.md).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from course_lib.assignments.cgroup import JobCgroup
from course_lib.assignments.checks import TensorInput

RUNNER = Path(__file__).with_name("runner.py")
PACKAGE = Path(__file__).resolve().parents[1]  # course_lib/, the only part of the checkout a sandbox sees
REPO_ROOT = PACKAGE.parent
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install "
    "bubblewrap), or, only for work you trust, pass --unsafe-no-sandbox"
)
MAX_ARRAYS = 1024  # per call: more is not a function's output
MAX_HEADER_BYTES = 1 << 20  # a frame's JSON header: 1,024 array descriptions fit many times over
MAX_TEXT = 500


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox on this machine (the message says how to fix it)."""


@dataclass
class Limits:
    """Per-submission limits. ``memory_mb`` is for the whole sandbox (and the address space of each
    of its processes: ``import torch`` alone maps ~1 GB)."""

    cell_timeout: float = 30.0  # seconds per cell and per graded function (all its hidden cases)
    timeout: float = 120.0  # seconds for the whole submission (wall clock), enforced by the parent
    memory_mb: int = 4096
    fsize_mb: int = 64  # bytes written: each file, /tmp, the working folder, the report channel
    nproc: int = 64  # processes and threads in the sandbox
    cpus: float = 1.0  # CPU cores the sandbox may use at most (where a cgroup can be made)


@dataclass
class RunResult:
    cells: dict  # cell id -> {"status", "message"} (as reported by the child: untrusted)
    calls: dict  # call index -> {"status", "message"} (untrusted)
    outputs: list  # per call: {"c<case>_<j>": array} or None when nothing readable came back
    returncode: int | None  # negative: killed by that signal
    timed_out: bool  # killed by the parent's wall-clock timeout
    wall_s: float
    start_s: float | None  # spawn -> runner ready (sandbox + interpreter + NumPy start-up)
    log_tail: str = ""
    notes: list = field(default_factory=list)  # what the parent saw (out of memory in the cgroup)


@functools.cache
def _bwrap_help() -> str:
    return subprocess.run(["bwrap", "--help"], capture_output=True, text=True, check=False).stdout


def _bwrap_command(runner_args: list[str], limits: Limits) -> list[str]:
    """The bwrap command line for one job (see the module docstring for what it isolates)."""
    size = str(limits.fsize_mb << 20)
    has = _bwrap_help()
    cmd = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000"]
    cmd += ["--disable-userns"] if "--disable-userns" in has else []
    cmd += ["--cap-drop", "ALL"] if os.getuid() == 0 else []
    cmd += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "lib", "lib32", "lib64", "sbin"):
        path = Path("/") / top
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for tmpfs in ("/tmp", "/home/student"):  # before the binds below, which may lie under /tmp
        cmd += (["--size", size] if "--size" in has else []) + ["--tmpfs", tmpfs]
    cmd += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in _python_paths():
        cmd += ["--ro-bind", path, path]
    cmd += ["--ro-bind", str(PACKAGE), str(PACKAGE)]
    return cmd + ["--chdir", "/home/student", "--", sys.executable, "-I", "-B", str(RUNNER), *runner_args]


@functools.cache
def _python_paths() -> tuple[str, ...]:
    """The Python installation and its site-packages, outside /usr (bound read-only, same paths)."""
    import site

    candidates = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    candidates += [os.path.realpath(p) for p in candidates] + site.getsitepackages()
    keep = []
    for path in sorted({os.path.abspath(p) for p in candidates if os.path.isdir(p)}, key=len):
        inside = any(path == k or path.startswith(k + os.sep) for k in keep + ["/usr"])
        if not inside and not (REPO_ROOT == Path(path) or REPO_ROOT.is_relative_to(path)):
            keep.append(path)
    return tuple(keep)


@functools.cache
def bwrap_problem() -> str | None:
    """None when bubblewrap can make a sandbox here; else what is wrong and how to fix it."""
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
    cmd = _bwrap_command([], Limits())
    cmd[cmd.index("--") + 1 :] = [sys.executable, "-I", "-c", "import numpy"]  # Python works inside
    probe = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    error = probe.stderr.strip()[-300:]
    if probe.returncode != 0 and error.startswith("bwrap:") and "execvp" not in error:
        return (
            f"bubblewrap is installed but cannot create a sandbox here ({error}); it needs user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 23.10+ "
            "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap), or "
            f"run the grader as root in a container; else {INSTALL_HINT}"
        )
    if probe.returncode != 0:
        return (
            f"Python with NumPy does not start inside the sandbox ({error}); the sandbox sees only "
            f"{', '.join(_python_paths())} and {PACKAGE}: the Python installation (or venv) must not be "
            f"the course folder {REPO_ROOT} or a folder above it (a venv in .venv/ is fine); "
            f"else {INSTALL_HINT}"
        )
    return None


def require_sandbox() -> None:
    """Raise SandboxUnavailable with the fix when submissions cannot be sandboxed here."""
    problem = bwrap_problem()
    if problem:
        raise SandboxUnavailable(f"refusing to run untrusted submissions: {problem}")


def _environment(home: str) -> dict:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp" if home == "/home/student" else home,
        "LANG": "C.UTF-8",
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


def _clean(value) -> dict:
    """A reported status as two short strings, whatever the child wrote."""
    value = value if isinstance(value, dict) else {}
    return {
        "status": str(value.get("status", "error"))[:20],
        "message": str(value.get("message", ""))[:MAX_TEXT],
    }


def _arrays(header: dict, payload: bytes) -> dict | None:
    """The arrays a frame announces, read from its payload, or None if anything is off."""
    specs = header.get("arrays")
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        return None
    arrays, offset = {}, 0
    try:
        for spec in specs:
            dtype, shape, key = np.dtype(str(spec["dtype"])), spec["shape"], str(spec["key"])[:40]
            if (
                dtype.kind not in "biuf"
                or dtype.itemsize > 16
                or not isinstance(shape, list)
                or len(shape) > 32
            ):
                return None
            if not all(isinstance(n, int) and 0 <= n for n in shape):
                return None
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if offset + count * dtype.itemsize > len(payload):
                return None
            arrays[key] = np.frombuffer(payload, dtype, count, offset).reshape(shape).copy()
            offset += count * dtype.itemsize
    except (TypeError, ValueError, KeyError, OverflowError):
        return None
    return arrays


def _header(raw: bytes) -> dict | None:
    """A frame's JSON header, or None when it is too long, not JSON or not an object."""
    if len(raw) > MAX_HEADER_BYTES:
        return None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def parse_reports(data: bytes, n_calls: int) -> dict:
    """The runner's frames (untrusted): {"ready", "cells", "calls", "outputs"}.

    A frame with a bad header is skipped (its length still says where the next one starts); a
    later frame about the same cell or call replaces an earlier one; reading stops where the
    framing breaks (a cut-off frame, bytes that are not a frame).
    """
    result = {"ready": None, "cells": {}, "calls": {}, "outputs": [None] * n_calls}
    pos = 0
    while pos + 8 <= len(data) and data[pos : pos + 4] == b"MSG1":
        (length,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            break
        pos += 8 + length
        raw, _, payload = body.partition(b"\n")
        header = _header(raw)
        if header is None:
            continue
        kind = header.get("type")
        if kind == "ready" and isinstance(header.get("t_ready"), float):
            result["ready"] = header["t_ready"]
        elif kind == "cell":
            result["cells"][str(header.get("id"))[:100]] = _clean(header)
        elif kind == "call" and header.get("index") in range(n_calls):
            result["calls"][str(header["index"])] = _clean(header)
            result["outputs"][header["index"]] = _arrays(header, payload)
    return result


def _inputs(calls: list[tuple[str, list[dict]]]) -> tuple[dict, list]:
    """(arrays for inputs.npz, the manifest of calls naming them)."""
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
    return arrays, manifest


def run_job(
    cells: list[dict],
    calls: list[tuple[str, list[dict]]],
    limits: Limits,
    seed: int = 0,
    sandbox: bool = True,
) -> RunResult:
    """Run ``cells`` ({"id", "source"}) then each call (function name, list of keyword-argument cases).

    Case values are Python scalars, NumPy arrays or ``TensorInput``s (see ``checks``). With
    ``sandbox=False`` (``--unsafe-no-sandbox``) the child runs without bubblewrap.
    """
    if sandbox:
        require_sandbox()
    scratch = None if sandbox else tempfile.mkdtemp(prefix="course-scratch-")
    group = JobCgroup.create(limits)
    # unnamed files, passed as descriptors: the job and inputs in, the reports and output back
    job_file, inputs_file, reports, log = (tempfile.TemporaryFile() for _ in range(4))  # noqa: SIM115 - closed below
    try:
        arrays, manifest = _inputs(calls)
        np.savez(inputs_file, **arrays)
        job = {
            "cells": cells,
            "calls": manifest,
            "cell_timeout": limits.cell_timeout,
            "seed": seed,
            "limits": {
                "memory_mb": limits.memory_mb,
                "cpu_s": int(limits.timeout) + 5,
                "fsize_mb": limits.fsize_mb,
                # per sandbox (its own user namespace); unsandboxed it would count all of the user's processes
                "nproc": limits.nproc if sandbox and not group else None,
            },
        }
        job_file.write(json.dumps(job).encode())
        fds = [f.fileno() for f in (job_file, inputs_file, reports)]
        for f in (job_file, inputs_file):
            f.seek(0)
        if sandbox:
            command, cwd, env = (
                _bwrap_command(list(map(str, fds)), limits),
                None,
                _environment("/home/student"),
            )
        else:
            command = [sys.executable, "-I", "-B", str(RUNNER), *map(str, fds)]
            cwd, env = scratch, _environment(scratch)
        if group:
            command = group.join_command(command)
        t0 = time.time()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=fds,
        )
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:  # the session: the sandbox (its PID namespace dies with it) or, unsandboxed, the group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        wall = time.time() - t0
        code = proc.returncode
        reports.seek(0)
        report = parse_reports(reports.read((limits.fsize_mb << 20) + 1), len(calls))
        if group and code == group.JOIN_FAILED and report["ready"] is None:
            raise RuntimeError(f"could not move a sandbox into its cgroup {group.dirs[0]} (a grader problem)")
        if sandbox and code is not None and code > 128:  # bwrap reports a signal as 128 + signal
            code = -(code - 128)
        notes = ["the sandbox ran out of memory"] if group and group.out_of_memory() else []
        log.seek(max(0, log.seek(0, os.SEEK_END) - 2000))
        ready = report["ready"]
        return RunResult(
            report["cells"],
            report["calls"],
            report["outputs"],
            code,
            timed_out,
            wall,
            ready - t0 if ready and 0 <= ready - t0 <= wall else None,
            log.read(2000).decode("utf-8", "replace"),
            notes,
        )
    finally:
        if group:
            group.close()
        for f in (job_file, inputs_file, reports, log):
            f.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
