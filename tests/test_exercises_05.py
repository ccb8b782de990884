"""Exercise set 05 (normalizing flows), graded by the real grader in one run, and its hidden inputs checked.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 05 SUBMISSIONS --out RESULTS --seed 7``:

* ``correct``: the solution itself -> 20/20;
* ``alternative``: equivalent answers written differently (torch.distributions is forbidden in task 1, so
  the log-normal density by hand in another arrangement; the coupling through a mask; the log-det of the
  block from the eigenvalues of M; the unchanged coordinates by pushing an identity matrix through the
  permutations) -> 20/20, so the hidden checks accept any correct answer;
* ``untouched``: the generated exercise -> 0;
* ``derivation_free``: the block's log-det with H*W pixels for the 1x1 convolution too (the squeeze
  forgotten), and "the coordinates every mask keeps" (the permutations ignored) -> 12/20;
* ``wrong_coupling``: log_det = sum(exp(s)) instead of sum(s) -> that task 0 (15/20).

That ``exercises/05_*.ipynb`` matches the source is tested for every set in test_assignments_source.py.
"""

import json
from pathlib import Path

import pytest
import torch
from exercise_harness import (
    assert_checks_keep_to_their_task,
    assert_grade,
    assert_set_layout,
    grade_cohort,
    with_answers,
)

from course_lib.assignments.checks import TensorInput
from course_lib.assignments.source import load_set

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "05_flows.ipynb"
EXERCISE = ROOT / "exercises" / "05_flows.ipynb"
POINTS = {"log_density_exp": 2, "affine_coupling": 5, "flow_bits_per_dim": 3, "sample_at_temperature": 2,
          "block_log_det": 4, "unchanged_inputs": 4}

ALTERNATIVE = {
    "answer_log_density_exp": (
        "def log_density_exp(x, mu, sigma):\n"
        "    sigma = torch.as_tensor(sigma, dtype=x.dtype)\n"
        "    return -torch.log(x * sigma * math.sqrt(2 * math.pi)) - (torch.log(x) - mu) ** 2 / (2 * sigma ** 2)\n"
    ),
    "answer_affine_coupling": (
        "def affine_coupling(x, W_s, b_s, W_t, b_t, reverse=False):\n"
        "    d = W_s.shape[0]\n"
        "    keep = torch.cat([torch.ones(d, dtype=x.dtype), torch.zeros(d, dtype=x.dtype)])\n"
        "    x1 = x[:, :d]\n"
        "    pad = torch.zeros_like(x1)\n"
        "    s = torch.cat([pad, torch.tanh(x1 @ W_s + b_s)], 1)\n"
        "    t = torch.cat([pad, x1 @ W_t + b_t], 1)\n"
        "    if reverse:\n"
        "        return keep * x + (1 - keep) * (x - t) / torch.exp(s), -(s.sum(1))\n"
        "    return keep * x + (1 - keep) * (x * torch.exp(s) + t), s.sum(1)\n"
    ),
    "answer_block_log_det": (
        "def block_log_det(log_scale, M, height, width):\n"
        "    log_abs_det_M = torch.linalg.eigvals(M).abs().log().sum().to(M.dtype)\n"
        "    return height * width * (log_scale.sum().to(M.dtype) + log_abs_det_M / 4)\n"
    ),
    "answer_unchanged_inputs": (  # follow an identity matrix through the permutations
        "def unchanged_inputs(masks, keys):\n"
        "    D = masks.shape[1]\n"
        "    tracker = torch.eye(D)  # row j = the input coordinate at position j\n"
        "    ok = torch.ones(D, dtype=torch.bool)\n"
        "    for mask, key in zip(masks, keys):\n"
        "        at = tracker.argmax(dim=0)  # at[i] = position of input i\n"
        "        ok = ok & (mask[at] == 1)\n"
        "        tracker = tracker[torch.argsort(key)]\n"
        "    return ok\n"
    ),
}

DERIVATION_FREE = {
    "answer_block_log_det": (  # the 1x1 convolution counted on H*W pixels: the squeeze forgotten
        "def block_log_det(log_scale, M, height, width):\n"
        "    return height * width * (log_scale.sum().to(M.dtype) + torch.linalg.slogdet(M)[1])\n"
    ),
    "answer_unchanged_inputs": (  # kept by every mask, as if there were no permutations
        "def unchanged_inputs(masks, keys):\n"
        "    return masks.bool().all(dim=0)\n"
    ),
}


def students() -> dict:
    return {
        "correct": json.loads(SOLUTION.read_text()),
        "alternative": with_answers(SOLUTION, ALTERNATIVE),
        "untouched": EXERCISE.read_text(),
        "derivation_free": with_answers(SOLUTION, DERIVATION_FREE),
        "wrong_coupling": with_answers(SOLUTION, {"answer_affine_coupling": ("s.sum(dim=1)\n    return", "torch.exp(s).sum(dim=1)\n    return")}),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    return grade_cohort(tmp_path_factory.mktemp("grade_05"), "05", students())


# student -> (total, status, {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (20, "ok", {}),
    "alternative": (20, "ok", {}),
    "untouched": (0, "error", {task: "not implemented yet" for task in POINTS}),
    "derivation_free": (12, "ok", {"block_log_det": "wrong value", "unchanged_inputs": "wrong value"}),
    "wrong_coupling": (15, "ok", {"affine_coupling": "wrong value"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_grades_and_reasons(graded, student):
    assert_grade(graded, student, EXPECTED[student], POINTS)


def test_set_layout_points_and_policy():
    assert_set_layout(SOLUTION, EXERCISE, POINTS, 6)


def test_check_cells_do_not_show_or_use_other_answers():
    """A task's visible check calls only its own function and prints no values of it."""
    assert_checks_keep_to_their_task(EXERCISE, SOLUTION)


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_hidden_inputs_are_valid_for_any_seed(seed):
    """Every drawn input is legal whatever the grading seed: positive x, sigma > 0, even image sizes,
    invertible M, masks of 0/1 with distinct keys, matching shapes."""
    for task in load_set(SOLUTION, seed=seed).tasks:
        for check in task.checks:
            for case in check.cases:
                case = {k: torch.from_numpy(v.array) if isinstance(v, TensorInput) else v for k, v in case.items()}
                if task.grade_id == "log_density_exp":
                    assert torch.all(case["x"] > 0) and torch.all(torch.as_tensor(case["sigma"]) > 0)
                if task.grade_id == "affine_coupling":
                    d = case["W_s"].shape[0]
                    assert case["x"].shape[1] == 2 * d and case["b_t"].shape == (d,)
                if task.grade_id == "block_log_det":
                    assert case["height"] % 2 == 0 and case["width"] % 2 == 0
                    assert case["M"].shape == (4 * len(case["log_scale"]),) * 2
                    assert torch.linalg.matrix_rank(case["M"]) == case["M"].shape[0]
                if task.grade_id == "unchanged_inputs":
                    assert case["masks"].shape == case["keys"].shape and set(case["masks"].unique().tolist()) <= {0, 1}
                    assert all(len(set(row.tolist())) == len(row) for row in case["keys"])
