"""The child: runs one rebuilt submission and calls its functions on the hidden inputs.

Started by ``sandbox.run_job`` as ``python -I -B runner.py JOB INPUTS REPORTS`` (inside bubblewrap,
unless the instructor asked for ``--unsafe-no-sandbox``): three file descriptors of unnamed files
the parent holds, the job (JSON), the hidden inputs (``.npz``) and the report channel. Steps:

1. lower its own resource limits (address space, CPU seconds, processes, file size, no core files);
2. run the cells of ``job.json`` in one namespace, each under a per-cell alarm; an exception,
   ``sys.exit()`` or ``os._exit()`` in one cell is recorded and the next cell still runs;
3. call each graded function on its hidden inputs;
4. report on REPORTS: one frame per cell and per call
   (``b"MSG1"``, a 4-byte length, a JSON line, then the raw bytes of the returned arrays).

Nothing here decides a grade: the parent parses the frames as untrusted data and compares the
arrays with the reference. This file imports only the standard library and NumPy (torch only
when an input is a tensor), so a child starts in a fraction of a second.
"""

import importlib.util
import json
import os
import random
import resource
import signal
import struct
import sys
import time
import traceback

T_START = time.time()
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.append(PACKAGE_PARENT)  # `import course_lib` works; -I keeps the script's folder off sys.path


class CellTimeout(BaseException):
    """Raised by the alarm; a BaseException so that ``except Exception`` in student code lets it through."""


def set_limits(limits: dict) -> None:
    mb = 2**20
    wanted = [
        ("RLIMIT_AS", limits["memory_mb"] * mb),
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_FSIZE", limits["fsize_mb"] * mb),
        ("RLIMIT_CORE", 0),
    ]
    if limits.get("nproc"):
        wanted.append(("RLIMIT_NPROC", limits["nproc"]))
    for name, value in wanted:
        soft, hard = resource.getrlimit(getattr(resource, name))
        value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
        resource.setrlimit(getattr(resource, name), (value, value if name != "RLIMIT_CPU" else hard))


def describe(exc: BaseException) -> tuple[str, str]:
    """(status, one-line message) of an exception raised by student code."""
    if isinstance(exc, CellTimeout):
        return "timeout", str(exc)
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError: the memory limit was reached"
    if isinstance(exc, SystemExit):
        return "error", f"the code called exit ({exc.code!r}); the grader went on with the next cell"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell ")]
    where = f" (line {frames[-1].lineno} of {frames[-1].filename.strip('<>')}" if frames else ""
    if frames and frames[0].filename != frames[-1].filename:  # raised in a helper of another cell
        where += f", called from line {frames[0].lineno} of {frames[0].filename.strip('<>')}"
    where += ")" if frames else ""
    text = str(exc) or ("the function is not implemented yet" if isinstance(exc, NotImplementedError) else "")
    return "error", (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:400] + where


def frame(header: dict, arrays: dict) -> bytes:
    """One report: header JSON (with each array's key, dtype and shape), newline, raw array bytes."""
    header["arrays"] = [{"key": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()]
    body = json.dumps(header).encode() + b"\n" + b"".join(a.tobytes() for a in arrays.values())
    return b"MSG1" + struct.pack("<I", len(body)) + body


def main(job_fd: int, inputs_fd: int, reports_fd: int) -> None:
    with os.fdopen(job_fd, "rb") as f:
        job = json.load(f)
    set_limits(job["limits"])
    import numpy as np  # after the limits, so they also cover NumPy's own allocations

    spec = importlib.util.spec_from_file_location(
        "grade_checks", os.path.join(os.path.dirname(os.path.abspath(__file__)), "checks.py")
    )
    checks = sys.modules["grade_checks"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    with os.fdopen(inputs_fd, "rb") as f, np.load(f, allow_pickle=False) as data:
        inputs = {k: data[k] for k in data.files}
    channel, real_exit, contiguous = os.fdopen(reports_fd, "wb", buffering=0), os._exit, np.ascontiguousarray

    def report(header, arrays=None):
        try:
            channel.write(frame(header, {k: contiguous(a) for k, a in (arrays or {}).items()}))
        except (OSError, ValueError):  # the file-size limit, or the student closed the channel
            pass

    def alarm(signum, frame):
        raise CellTimeout(f"timed out after {job['cell_timeout']:g} s")

    def refuse_exit(code=0):
        raise SystemExit(code)

    signal.signal(signal.SIGALRM, alarm)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    os._exit = refuse_exit
    import posix

    posix._exit = refuse_exit
    random.seed(job["seed"])
    np.random.seed(job["seed"])
    report({"type": "ready", "t_start": T_START, "t_ready": time.time()})
    namespace = {"__name__": "__main__"}
    for cell in job["cells"]:
        result = {"type": "cell", "id": cell["id"], "status": "ok", "message": ""}
        try:
            code = compile(cell["source"], f"<cell {cell['id']}>", "exec")
            signal.setitimer(signal.ITIMER_REAL, job["cell_timeout"])
            exec(code, namespace)
        except BaseException as exc:  # noqa: BLE001 - everything the student does is recorded, nothing escapes
            result["status"], result["message"] = describe(exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        report(result)

    for i, call in enumerate(job["calls"]):
        result = {"type": "call", "index": i, "status": "ok", "message": "", "cases_done": 0}
        arrays = {}
        try:
            function = namespace.get(call["function"])
            if not callable(function):
                raise NameError(f"function {call['function']!r} is not defined after running the notebook")
            if "torch" in sys.modules:
                sys.modules["torch"].manual_seed(job["seed"])
            np.random.seed(job["seed"])
            signal.setitimer(signal.ITIMER_REAL, job["cell_timeout"])
            for c, case in enumerate(call["cases"]):
                kwargs = {}
                for name, spec in case.items():
                    value = inputs[spec["key"]].copy()
                    if spec["kind"] == "scalar":
                        value = value.item()
                    elif spec["kind"] == "tensor":
                        import torch

                        value = torch.from_numpy(value)
                    kwargs[name] = value
                for j, out in enumerate(checks.to_numpy_outputs(function(**kwargs))):
                    arrays[f"c{c}_{j}"] = out
                result["cases_done"] = c + 1
        except BaseException as exc:  # noqa: BLE001
            result["status"], result["message"] = describe(exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        report(result, arrays)
    report({"type": "done"})
    sys.stdout.flush()
    real_exit(0)  # skip atexit handlers the student may have registered


if __name__ == "__main__":
    main(*map(int, sys.argv[1:4]))
