"""Exercise set 08 (score matching, SDEs, VDM and flow matching), graded by the real grader in one run.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 08 SUBMISSIONS --out RESULTS --seed 7``:

* ``correct``: the solution itself -> 20/20;
* ``alternative``: other, equivalent formulas (the DSM loss as 1/2 |sigma s + z|^2, beta(t) as an
  interpolation, the CFM path as x0 + t (x1 - x0) with einsum, the DSM floor as 1/2 minus the part
  the score explains, the marginal velocity as E[x1 | x_t] - E[x0 | x_t], the VDM loss through
  logaddexp of log v - gamma) -> 20/20: the hidden checks accept any correct answer;
* ``untouched``: the generated exercise -> 0;
* ``derivation_free``: answers written without the derivations: "the optimal score makes the DSM
  loss zero", the marginal velocity as the unconditional mean velocity m, VDM's loss with a useless
  denoiser (1/2 (gamma(1) - gamma(0)) D) -> only the three translation tasks score (9/20);
* ``wrong_pf_ode_g2``: the probability-flow step with the reverse SDE's drift f - g^2 score -> that task 0;
* ``policy_library``: the CFM loss from ``course_lib.diffusion.flow_matching`` -> policy, 0.

``test_hidden_inputs_are_valid_for_any_seed`` checks, for several seeds, that every drawn input is
legal (a time step that stays in [0, 1], an increasing schedule, positive variances and noise levels).
That ``exercises/08_*.ipynb`` matches the source is tested for every set in test_assignments_source.py.
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
SOLUTION = ROOT / "solutions" / "08_score_sde_flow_matching.ipynb"
EXERCISE = ROOT / "exercises" / "08_score_sde_flow_matching.ipynb"
POINTS = {"dsm_loss": 3, "pf_ode_step": 3, "cfm_loss": 3, "dsm_minimum": 3, "gaussian_velocity": 4,
          "vdm_gaussian_loss": 4}
DERIVED = ["dsm_minimum", "gaussian_velocity", "vdm_gaussian_loss"]

ALTERNATIVE = {
    "answer_dsm_loss": (
        "def dsm_loss(x, z, sigma, W, c):\n"
        "    s = sigma.reshape(-1, 1)\n"
        "    score = torch.matmul(x + s * z, W) + c\n"
        "    return 0.5 * ((s * score + z) ** 2).sum(dim=1) / x.shape[1]\n"
    ),
    "answer_pf_ode_step": (
        "def pf_ode_step(x, score, t, dt, beta_min, beta_max):\n"
        "    beta = (1 - t) * beta_min + t * beta_max\n"
        "    return x + 0.5 * beta * dt * (x + score)\n"
    ),
    "answer_cfm_loss": (
        "def cfm_loss(x0, x1, t, W, b, c):\n"
        "    u = x1 - x0\n"
        "    x_t = x0 + t[:, None] * u\n"
        "    v = torch.einsum('nd,de->ne', x_t, W) + torch.outer(t, b) + c\n"
        "    return ((v - u) ** 2).sum(dim=1) / x0.shape[1]\n"
    ),
    "answer_dsm_minimum": (
        "def dsm_minimum(data_var, sigma):\n"
        "    s2 = sigma[:, None] ** 2\n"
        "    return 0.5 - 0.5 * (s2 / (data_var + s2)).mean(dim=1)\n"
    ),
    "answer_gaussian_velocity": (
        "def gaussian_velocity(x, t, m, s):\n"
        "    var = (1 - t) ** 2 + t ** 2 * s ** 2\n"
        "    e_x1 = m + t * s ** 2 / var * (x - t * m)\n"
        "    e_x0 = (1 - t) / var * (x - t * m)\n"
        "    return e_x1 - e_x0\n"
    ),
    "answer_vdm_gaussian_loss": (
        "def vdm_gaussian_loss(gamma, data_var):\n"
        "    log_v, zero = torch.log(data_var), torch.zeros_like(data_var)\n"
        "    high = torch.logaddexp(zero, log_v - gamma[0])\n"
        "    low = torch.logaddexp(zero, log_v - gamma[len(gamma) - 1])\n"
        "    return torch.sum(high - low) / 2\n"
    ),
}

DERIVATION_FREE = {
    "answer_dsm_minimum": (  # "the optimal score makes the loss zero"
        "def dsm_minimum(data_var, sigma):\n    return torch.zeros_like(sigma)\n"
    ),
    "answer_gaussian_velocity": (  # the mean velocity E[x1 - x0], not conditioned on x_t
        "def gaussian_velocity(x, t, m, s):\n    return torch.full_like(x, m)\n"
    ),
    "answer_vdm_gaussian_loss": (  # the eps-form with a denoiser that knows nothing: |eps - 0|^2 = D
        "def vdm_gaussian_loss(gamma, data_var):\n    return 0.5 * (gamma[-1] - gamma[0]) * data_var.numel()\n"
    ),
}


def students() -> dict:
    return {
        "correct": json.loads(SOLUTION.read_text()),
        "alternative": with_answers(SOLUTION, ALTERNATIVE),
        "untouched": EXERCISE.read_text(),
        "derivation_free": with_answers(SOLUTION, DERIVATION_FREE),
        "wrong_pf_ode_g2": with_answers(SOLUTION, {"answer_pf_ode_step": ("- 0.5 * beta * score", "- beta * score")}),
        "policy_library": with_answers(SOLUTION, {
            "answer_cfm_loss": "def cfm_loss(x0, x1, t, W, b, c):\n"
                               "    from course_lib.diffusion.flow_matching import cfm_loss as reference\n"
                               "    return reference(lambda x_t, s: x_t @ W + s[:, None] * b + c, x1, t=t, x0=x0)\n"}),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    return grade_cohort(tmp_path_factory.mktemp("grade_08"), "08", students())


# student -> (total, status, {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (20, "ok", {}),
    "alternative": (20, "ok", {}),
    "untouched": (0, "error", {task: "not implemented yet" for task in POINTS}),
    "derivation_free": (9, "ok", {task: "wrong value" for task in DERIVED}),
    "wrong_pf_ode_g2": (17, "ok", {"pf_ode_step": "wrong value"}),
    "policy_library": (0, "policy", {"cfm_loss": "course_lib.diffusion"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_grades_and_reasons(graded, student):
    assert_grade(graded, student, EXPECTED[student], POINTS)


def test_set_layout_points_and_policy():
    forbidden = assert_set_layout(SOLUTION, EXERCISE, POINTS, 6)
    assert all("course_lib.diffusion" in names for names in forbidden.values())


def test_check_cells_do_not_show_or_use_other_answers():
    """A task's visible check calls only its own function and prints no values of it."""
    assert_checks_keep_to_their_task(EXERCISE, SOLUTION)


def _cases(seed):
    for task in load_set(SOLUTION, seed=seed).tasks:
        for check in task.checks:
            for case in check.cases:
                yield task.grade_id, {
                    k: torch.from_numpy(v.array) if isinstance(v, TensorInput) else v for k, v in case.items()
                }


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_hidden_inputs_are_valid_for_any_seed(seed):
    """Every drawn input is legal whatever the grading seed: positive noise levels and variances, a
    step that stays in [0, 1], times in [0, 1] with both ends among the velocity's cases, an
    increasing VDM schedule, and shapes that agree."""
    ends = set()
    for task, case in _cases(seed):
        if task in ("dsm_loss", "cfm_loss"):
            data = case["x"] if task == "dsm_loss" else case["x0"]
            d = data.shape[1]
            assert data.dim() == 2 and case["W"].shape == (d, d) and case["c"].shape == (d,), (task, case)
            assert case["z" if task == "dsm_loss" else "x1"].shape == data.shape, (task, case)
            assert (case["sigma"] > 0).all() if task == "dsm_loss" else ((case["t"] >= 0) & (case["t"] <= 1)).all()
        elif task == "pf_ode_step":
            assert case["score"].shape == case["x"].shape, case
            assert 0 < case["t"] - case["dt"] < case["t"] <= 1 and 0 < case["beta_min"] < case["beta_max"], case
        elif task == "dsm_minimum":
            assert (case["data_var"] > 0).all() and (case["sigma"] > 0).all(), case
        elif task == "gaussian_velocity":
            assert case["x"].shape == case["t"].shape and ((case["t"] >= 0) & (case["t"] <= 1)).all() and case["s"] > 0
            ends.update(float(t) for t in case["t"] if t in (0.0, 1.0))
        elif task == "vdm_gaussian_loss":
            gamma = case["gamma"]
            assert len(gamma) >= 2 and (gamma[1:] > gamma[:-1]).all() and (case["data_var"] > 0).all(), case
    assert ends == {0.0, 1.0}, "the marginal velocity must be checked at t = 0 and t = 1"
