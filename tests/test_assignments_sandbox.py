"""The sandbox child on its own: environment, process kill, torch tensors, untrusted reports."""

import json
import os
import signal
import struct
import time

import numpy as np
import pytest

from course_lib.assignments import sandbox
from course_lib.assignments.checks import as_tensor
from course_lib.assignments.sandbox import Limits, bwrap_problem, parse_reports, run_job

LIMITS = Limits(cell_timeout=5.0, timeout=30.0, memory_mb=3000)
needs_sandbox = pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))


@needs_sandbox
def test_child_gets_a_clean_environment_and_scratch_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADER_SECRET", "hunter2")
    cells = [
        {
            "id": "a",
            "source": (
                "import os, numpy as np\n"
                "def probe():\n"
                "    env = os.environ\n"
                "    return np.array([len(env.get('GRADER_SECRET', '')), env['COURSE_FAST'] == '1',\n"
                "                     env['CUDA_VISIBLE_DEVICES'] == '', os.getcwd() == env['HOME']])\n"
            ),
        }
    ]
    result = run_job(cells, [("probe", [{}])], LIMITS)
    np.testing.assert_array_equal(result.outputs[0]["c0_0"], [0, 1, 1, 1])


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (a number only this test uses)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@needs_sandbox
def test_setsid_daemons_die_with_the_sandbox(monkeypatch):
    """Issue 16: a setsid daemon outlived the grader. In its own PID namespace it cannot (tested
    without the cgroup, which would also kill it)."""
    monkeypatch.setattr(sandbox.JobCgroup, "create", staticmethod(lambda limits: None))
    marker = f"{time.time() % 1000:.6f}"  # `sleep 123.456789`: unique to this test run
    cells = [
        {
            "id": "a",
            "source": (
                "import subprocess, numpy as np\n"
                f"subprocess.Popen(['setsid', 'sh', '-c', 'sleep {marker} & sleep {marker}'],\n"
                "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)\n"
                "def one():\n    return np.array(1)\n"
            ),
        }
    ]
    try:
        result = run_job(cells, [("one", [{}])], LIMITS)
        assert result.outputs[0]["c0_0"] == 1
        time.sleep(0.2)
        assert processes_with(marker) == []
    finally:
        for pid in processes_with(marker):  # only if the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)


@needs_sandbox
@pytest.mark.slow
def test_torch_tensor_inputs_and_outputs_cross_as_arrays():
    cells = [
        {
            "id": "a",
            "source": (
                "import torch\n"
                "def scale(x, factor):\n"
                "    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32\n"
                "    return x * factor, torch.tensor(factor)\n"
            ),
        }
    ]
    result = run_job(cells, [("scale", [{"x": as_tensor([1.0, 2.0]), "factor": 3}])], LIMITS)
    assert result.calls["0"]["status"] == "ok", result.calls
    np.testing.assert_array_equal(result.outputs[0]["c0_0"], np.array([3.0, 6.0], dtype=np.float32))
    assert result.outputs[0]["c0_1"] == 3


def frame(header: dict, payload: bytes = b"") -> bytes:
    body = json.dumps(header).encode() + b"\n" + payload
    return b"MSG1" + struct.pack("<I", len(body)) + body


def test_reports_are_parsed_as_untrusted_data():
    """Only plain numeric arrays come back; anything malformed is "no output", quickly."""
    good = frame(
        {
            "type": "call",
            "index": 0,
            "status": "ok",
            "arrays": [{"key": "c0_0", "dtype": "<f8", "shape": [2]}],
        },
        np.array([1.0, 2.0]).tobytes(),
    )
    assert parse_reports(good, 1)["outputs"][0]["c0_0"].tolist() == [1.0, 2.0]
    hostile = [
        {"type": "call", "index": 0, "arrays": [{"key": "c0_0", "dtype": "|O", "shape": [1]}]},  # objects
        {"type": "call", "index": 0, "arrays": [{"key": "c0_0", "dtype": "<f8", "shape": [10**9]}]},  # short
        {
            "type": "call",
            "index": 0,
            "arrays": [{"key": f"k{i}", "dtype": "<f8", "shape": [0]} for i in range(200_000)],
        },
    ]
    t0 = time.perf_counter()
    for header in hostile:
        assert parse_reports(frame(header, b"\0" * 16), 1)["outputs"] == [None]
    assert time.perf_counter() - t0 < 2.0  # 200,000 members cost nothing
    later = parse_reports(frame(hostile[2]) + good, 1)  # a bad frame is skipped, the next one read
    assert later["outputs"][0]["c0_0"].tolist() == [1.0, 2.0]
    truncated = parse_reports(good + b"MSG1" + struct.pack("<I", 10**6) + b"{", 1)
    assert truncated["outputs"][0]["c0_0"].tolist() == [1.0, 2.0]  # a cut-off frame ends the reading
    assert parse_reports(frame({"type": "call", "index": 7}), 1)["calls"] == {}  # no such call


def test_python_under_tmp_is_bound_after_the_sandbox_tmp():
    """A venv in /tmp must not be hidden by the sandbox's own /tmp (found grading as `nobody`)."""
    from course_lib.assignments.sandbox import PACKAGE, _bwrap_command, _python_paths

    cmd = _bwrap_command(["3", "4", "5"], LIMITS)
    tmpfs = cmd.index("/tmp", cmd.index("--tmpfs"))
    for path in [*_python_paths(), str(PACKAGE)]:
        assert cmd.index(path) > tmpfs, path
    assert cmd[-4:] == [str(sandbox.RUNNER), "3", "4", "5"] and "--unshare-all" in cmd
