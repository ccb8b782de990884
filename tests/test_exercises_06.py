"""Exercise set 06 (DDPM), graded by the real grader in one run, and its hidden-test data checked.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 06 SUBMISSIONS --out RESULTS --seed 7``:

* ``correct``: the solution itself -> 20/20;
* ``alternative``: other, equivalent formulas (alpha_t from alpha_bar_t / alpha_bar_{t-1}, a Python
  loop for alpha_bar, the eps-form read off the x_0-form by substitution, the step of Algorithm 2
  probed as an affine map, the bound term through torch.distributions' KL of two Gaussians)
  -> 20/20, so the hidden checks accept any correct answer, not only the reference's algebra;
* ``untouched``: the generated exercise -> 0;
* ``derivation_free``: answers written without the derivations: the x_0-form coefficients for
  the eps-form, the mean-weight 1 / (2 sigma_t^2) for lambda_t, "the sampler returns the data"
  (m, s) for Algorithm 2's moments, the KL at the mean x_t for the bound term -> only the two
  translation tasks score (5/20);
* ``wrong_forward``: the forward jump with (1 - alpha_bar_t) instead of its square root -> that task 0;
* ``policy_reference_kl``: calls ``course_lib.distributions.gaussian_kl`` -> policy, 0.

The hidden inputs are drawn at grading time (``--seed``); ``test_hidden_inputs_are_valid_for_any_seed``
checks, for several seeds, that every drawn schedule and time is a legal DDPM input.
That ``exercises/06_*.ipynb`` matches the source is tested for every set in test_assignments_source.py.
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
SOLUTION = ROOT / "solutions" / "06_diffusion_ddpm.ipynb"
EXERCISE = ROOT / "exercises" / "06_diffusion_ddpm.ipynb"
POINTS = {
    "gaussian_kl": 2,
    "q_sample": 3,
    "eps_form": 4,
    "eps_loss_weight": 3,
    "sampler_moments": 4,
    "bound_term": 4,
}
DERIVED = ["eps_form", "eps_loss_weight", "sampler_moments", "bound_term"]  # tasks whose formula is not given

ALTERNATIVE = {
    "answer_gaussian_kl": (
        "def gaussian_kl(mean1, log_var1, mean2, log_var2):\n"
        "    log_sigma_ratio = 0.5 * (log_var2 - log_var1)  # log(sigma_2 / sigma_1)\n"
        "    spread = torch.exp(log_var1) + (mean1 - mean2) ** 2\n"
        "    return log_sigma_ratio + spread / (2 * torch.exp(log_var2)) - 0.5\n"
    ),
    "answer_q_sample": (
        "def q_sample(x0, t, eps, betas):\n"
        "    product, alpha_bars = torch.ones((), dtype=betas.dtype), [torch.ones((), dtype=betas.dtype)]\n"
        "    for beta in betas[1:]:\n"
        "        product = product * (1 - beta)\n"
        "        alpha_bars.append(product)\n"
        "    a = torch.stack(alpha_bars)[t].view(-1, *[1] * (x0.ndim - 1))\n"
        "    return a.sqrt() * x0 + (1 - a).sqrt() * eps\n"
    ),
    "answer_eps_form": (  # substitute x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) into the x0-form, collect terms
        "def eps_form(t, betas):\n"
        "    ab = alpha_bars_from(betas)\n"
        "    ab_t, ab_prev = ab[t], ab[t - 1]\n"
        "    alpha_t = ab_t / ab_prev\n"
        "    c0 = ab_prev.sqrt() * (1 - alpha_t) / (1 - ab_t)\n"
        "    c1 = alpha_t.sqrt() * (1 - ab_prev) / (1 - ab_t)\n"
        "    return c1 + c0 / ab_t.sqrt(), c0 * (1 - ab_t).sqrt() / ab_t.sqrt()\n"
    ),
    "answer_eps_loss_weight": (
        "def eps_loss_weight(t, betas, sigma2):\n"
        "    ab = alpha_bars_from(betas)\n"
        "    b = betas[t] / ((1 - betas[t]).sqrt() * (1 - ab[t]).sqrt())  # mu_tilde - mu_theta = b (eps_theta - eps)\n"
        "    return b ** 2 / (2 * sigma2[t])\n"
    ),
    "answer_sampler_moments": (  # read the affine step off by probing it at x = 0, 1 and z = 0, 1
        "def sampler_moments(m, s, betas, sigma2):\n"
        "    ab = alpha_bars_from(betas)\n"
        "    def step(x, t, z):\n"
        "        eps_star = (1 - ab[t]).sqrt() * (x - ab[t].sqrt() * m) / (ab[t] * s ** 2 + 1 - ab[t])\n"
        "        noise = sigma2[t].sqrt() * z if t > 1 else 0 * z\n"
        "        return (x - betas[t] / (1 - ab[t]).sqrt() * eps_star) / (1 - betas[t]).sqrt() + noise\n"
        "    zero, one = torch.zeros((), dtype=betas.dtype), torch.ones((), dtype=betas.dtype)\n"
        "    mean, var = zero, one\n"
        "    for t in range(len(betas) - 1, 0, -1):\n"
        "        B = step(zero, t, zero)\n"
        "        A, C = step(one, t, zero) - B, step(zero, t, one) - B\n"
        "        mean, var = A * mean + B, A ** 2 * var + C ** 2\n"
        "    return torch.stack([mean, var.sqrt()])\n"
    ),
    "answer_bound_term": (  # E_x_t KL = KL at the mean x_t plus the variance term of the mean difference
        "def bound_term(x0, t, betas):\n"
        "    ab = alpha_bars_from(betas)\n"
        "    ab_t, ab_prev, beta = ab[t], ab[t - 1], betas[t]\n"
        "    slope = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t) - (1 - beta).sqrt()\n"
        "    gap = ab_prev.sqrt() * beta / (1 - ab_t) * x0 + slope * ab_t.sqrt() * x0\n"
        "    beta_tilde = (1 - ab_prev) / (1 - ab_t) * beta\n"
        "    kl_at_mean = 0.5 * (torch.log(beta) - torch.log(beta_tilde)) + (beta_tilde + gap ** 2) / (2 * beta) - 0.5\n"
        "    return kl_at_mean + slope ** 2 * (1 - ab_t) / (2 * beta)\n"
    ),
}

DERIVATION_FREE = {
    "answer_eps_form": (  # the x_0-form coefficients, as if they were the eps-form
        "def eps_form(t, betas):\n"
        "    ab = alpha_bars_from(betas)\n"
        "    c0 = ab[t - 1].sqrt() * betas[t] / (1 - ab[t])\n"
        "    c1 = (1 - betas[t]).sqrt() * (1 - ab[t - 1]) / (1 - ab[t])\n"
        "    return c1, c0\n"
    ),
    "answer_eps_loss_weight": (  # the weight of ||mu_tilde - mu_theta||^2, not of the noise error
        "def eps_loss_weight(t, betas, sigma2):\n"
        "    return 1 / (2 * sigma2[t])\n"
    ),
    "answer_sampler_moments": (  # "the exact model reproduces the data", whatever sigma_t
        "def sampler_moments(m, s, betas, sigma2):\n"
        "    return torch.tensor([m, s], dtype=betas.dtype)\n"
    ),
    "answer_bound_term": (  # the KL at x_t = its mean, without the variance of the mean difference
        "def bound_term(x0, t, betas):\n"
        "    ab = alpha_bars_from(betas)\n"
        "    ab_t, ab_prev, beta = ab[t], ab[t - 1], betas[t]\n"
        "    x_t = ab_t.sqrt() * x0\n"
        "    mu_tilde = ab_prev.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t\n"
        "    beta_tilde = (1 - ab_prev) / (1 - ab_t) * beta\n"
        "    d = mu_tilde - (1 - beta).sqrt() * x_t\n"
        "    return 0.5 * (torch.log(beta / beta_tilde) + (beta_tilde + d ** 2) / beta - 1)\n"
    ),
}


def students() -> dict:
    return {
        "correct": json.loads(SOLUTION.read_text()),
        "alternative": with_answers(SOLUTION, ALTERNATIVE),
        "untouched": EXERCISE.read_text(),
        "derivation_free": with_answers(SOLUTION, DERIVATION_FREE),
        "wrong_forward": with_answers(SOLUTION, 
            {"answer_q_sample": ("torch.sqrt(1.0 - alpha_bar_t) * eps", "(1.0 - alpha_bar_t) * eps")}
        ),
        "policy_reference_kl": with_answers(SOLUTION, 
            {
                "answer_gaussian_kl": "def gaussian_kl(mean1, log_var1, mean2, log_var2):\n"
                "    from course_lib.distributions import gaussian_kl as reference_kl\n"
                "    return reference_kl(mean1, log_var1, mean2, log_var2)\n"
            }
        ),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    return grade_cohort(tmp_path_factory.mktemp("grade_06"), "06", students())


# student -> (total, status, {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (20, "ok", {}),
    "alternative": (20, "ok", {}),
    "untouched": (0, "error", {task: "not implemented yet" for task in POINTS}),
    "derivation_free": (5, "ok", {task: "wrong value" for task in DERIVED}),
    "wrong_forward": (17, "ok", {"q_sample": "wrong value"}),
    "policy_reference_kl": (
        0,
        "policy",
        {
            "gaussian_kl": "course_lib.distributions.gaussian_kl', the reference implementation",
            "q_sample": "imports 'course_lib.distributions.gaussian_kl', which is not allowed",
        },
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_grades_and_reasons(graded, student):
    assert_grade(graded, student, EXPECTED[student], POINTS)


def test_set_layout_points_and_policy():
    forbidden = assert_set_layout(SOLUTION, EXERCISE, POINTS, 6)
    assert forbidden["gaussian_kl"] == {"course_lib.distributions.gaussian_kl", "torch.distributions"}
    assert all("course_lib.diffusion" in names for task, names in forbidden.items() if task != "gaussian_kl")


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
    """Every drawn schedule is a legal DDPM schedule and every t a legal time, whatever the grading seed."""
    edges = {}
    for task, case in _cases(seed):
        if "betas" not in case:
            continue
        betas = case["betas"].double()
        T = len(betas) - 1
        assert T >= 3 and betas[0] == 0 and torch.all((betas[1:] > 0) & (betas[1:] < 1)), (task, betas)
        for name in ("sigma2",):
            if name in case:
                assert case[name].shape == betas.shape and torch.all(case[name] >= 0), (task, name)
        if "t" not in case:
            continue
        t = case["t"]
        lowest = 2 if task in ("eps_loss_weight", "bound_term") else 1
        assert t.dtype == torch.int64 and t.dim() == 1 and lowest <= int(t.min()) and int(t.max()) <= T, (task, t, T)
        data = case.get("x0")
        if data is not None:
            assert data.shape[0] == len(t)
        edges.setdefault(task, set()).update({"t=lowest"} if (t == lowest).any() else set())
        edges[task].update({"t=T"} if (t == T).any() else set())
    for task in ("q_sample", "eps_form"):
        assert {"t=lowest", "t=T"} <= edges[task], f"{task}: hidden cases miss an edge case: {edges[task]}"
    for task in ("eps_loss_weight", "bound_term"):
        assert "t=lowest" in edges[task], f"{task}: no case at t = 2"
