"""The sandbox child on its own: environment, process-group kill, torch tensors, untrusted outputs."""

import os
import time

import numpy as np
import pytest

from course_lib.assignments.checks import as_tensor
from course_lib.assignments.sandbox import Limits, _read_outputs, run_job

LIMITS = Limits(cell_timeout=5.0, timeout=30.0, memory_mb=3000)


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


def test_forked_processes_die_with_the_child():
    cells = [
        {
            "id": "a",
            "source": (
                "import subprocess, numpy as np\n"
                "sleeper = subprocess.Popen(['sleep', '60'])\n"
                "def pid():\n    return np.array(sleeper.pid)\n"
            ),
        }
    ]
    result = run_job(cells, [("pid", [{}])], LIMITS)
    pid = int(result.outputs[0]["c0_0"])
    time.sleep(0.2)
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().split(")")[-1].split()[0]
        assert state in {"Z", "X"}, f"sleep {pid} still running (state {state})"
    except FileNotFoundError:
        pass  # gone


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


def test_outputs_that_need_unpickling_or_are_links_are_not_read(tmp_path):
    np.save(tmp_path / "x.npy", np.array([1]))
    np.savez(tmp_path / "objects.npz", c0_0=np.array([{"evil": 1}], dtype=object))
    assert _read_outputs(str(tmp_path / "objects.npz")) is None  # would need pickle
    np.savez(tmp_path / "fine.npz", c0_0=np.arange(3))
    os.symlink(tmp_path / "fine.npz", tmp_path / "link.npz")
    assert _read_outputs(str(tmp_path / "link.npz")) is None
    assert _read_outputs(str(tmp_path / "fine.npz"))["c0_0"].tolist() == [0, 1, 2]
