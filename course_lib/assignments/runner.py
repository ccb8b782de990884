"""The sandboxed child: runs one rebuilt submission and calls its functions on the hidden inputs.

Started by ``sandbox.run_job`` as ``python -s -B runner.py`` in a fresh scratch directory that
holds ``job.json`` and ``inputs.npz``. Steps:

1. lower its own resource limits (memory, CPU seconds, processes, file size, no core files);
2. run the cells of ``job.json`` in one namespace, each under a per-cell alarm; an exception,
   ``sys.exit()`` or ``os._exit()`` in one cell is recorded and the next cell still runs;
3. call each graded function on its hidden inputs and save the outputs, plain arrays only, to
   ``out_<i>.npz``; 4. write ``status.json``.

Nothing here decides a grade: the parent compares the arrays with the reference and treats the
status as untrusted text. This file imports only the standard library and NumPy (torch only
when an input is a tensor), so a child starts in a fraction of a second.
"""

import importlib.util
import json
import os
import random
import resource
import signal
import sys
import time
import traceback

T_START = time.time()
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]


class CellTimeout(BaseException):
    """Raised by the alarm; a BaseException so that ``except Exception`` in student code lets it through."""


def set_limits(limits: dict) -> None:
    mb = 2**20
    for name, value in (
        ("RLIMIT_AS", limits["memory_mb"] * mb),
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_NPROC", limits["nproc"]),
        ("RLIMIT_FSIZE", limits["fsize_mb"] * mb),
        ("RLIMIT_CORE", 0),
    ):
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


def main(job_path: str) -> None:
    job = json.load(open(job_path))
    set_limits(job["limits"])
    import numpy as np  # after the limits, so they also cover NumPy's own allocations

    spec = importlib.util.spec_from_file_location(
        "grade_checks", os.path.join(os.path.dirname(__file__), "checks.py")
    )
    checks = sys.modules["grade_checks"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    savez, dumps, replace, real_exit = np.savez, json.dumps, os.replace, os._exit  # before student code runs
    with np.load("inputs.npz", allow_pickle=False) as data:
        inputs = {k: data[k] for k in data.files}
    status = {"cells": {}, "calls": {}, "t_start": T_START, "t_ready": time.time(), "done": False}

    def write_status():
        with open("status.json.tmp", "w") as f:
            f.write(dumps(status))
        replace("status.json.tmp", "status.json")

    def alarm(signum, frame):
        raise CellTimeout(f"timed out after {job['cell_timeout']:g} s")

    def refuse_exit(code=0):
        raise SystemExit(code)

    signal.signal(signal.SIGALRM, alarm)
    os._exit = refuse_exit
    import posix

    posix._exit = refuse_exit
    random.seed(job["seed"])
    np.random.seed(job["seed"])
    namespace = {"__name__": "__main__"}
    for cell in job["cells"]:
        result = {"status": "ok", "message": ""}
        try:
            code = compile(cell["source"], f"<cell {cell['id']}>", "exec")
            signal.setitimer(signal.ITIMER_REAL, job["cell_timeout"])
            exec(code, namespace)
        except BaseException as exc:  # noqa: BLE001 - everything the student does is recorded, nothing escapes
            result["status"], result["message"] = describe(exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        status["cells"][cell["id"]] = result
        write_status()

    for i, call in enumerate(job["calls"]):
        result = {"status": "ok", "message": "", "cases_done": 0}
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
        try:
            savez(f"out_{i}.npz", **arrays)
        except BaseException as exc:  # noqa: BLE001 - e.g. the file-size limit
            result["status"], result["message"] = describe(exc)
        status["calls"][str(i)] = result
        write_status()
    status["done"] = True
    write_status()
    sys.stdout.flush()
    real_exit(0)  # skip atexit handlers the student may have registered


if __name__ == "__main__":
    main(sys.argv[1])
