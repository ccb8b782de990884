"""Exercise set 07 (DDIM and guidance), graded by the real grader in one run.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 07 SUBMISSIONS --out RESULTS --seed 7``:

* ``correct``: the solution itself -> 20/20;
* ``alternative``: other, equivalent formulas (the DDIM step as a combination of x_t and eps, CFG as
  eps_cond + w (eps_cond - eps_uncond), the guided eps through the score, the posterior variance in
  DDIM's factored form, the mixture score with a loop and logsumexp, the tilted Gaussian through
  natural parameters) -> 20/20: the hidden checks accept any correct answer;
* ``untouched``: the generated exercise -> 0;
* ``derivation_free``: answers written without the derivations: the forward jump's variance
  1 - ab_t / ab_s for the posterior variance, the score of the undiffused mixture, "guidance divides
  the variance by 1 + w" -> only the three translation tasks score (8/20);
* ``wrong_cfg_sign``: (1 - w) eps_cond + w eps_uncond -> that task 0;
* ``policy_library``: the DDIM step from ``course_lib.diffusion.ddim`` -> policy, 0.
"""

import json
from pathlib import Path

import pytest
from exercise_harness import (
    assert_checks_keep_to_their_task,
    assert_grade,
    assert_set_layout,
    grade_cohort,
    with_answers,
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "07_ddim_guidance.ipynb"
EXERCISE = ROOT / "exercises" / "07_ddim_guidance.ipynb"
POINTS = {"ddim_step": 3, "cfg_combine": 2, "guided_eps": 3, "posterior_variance": 4, "mixture_score": 4,
          "cfg_gaussian": 4}
DERIVED = ["posterior_variance", "mixture_score", "cfg_gaussian"]

ALTERNATIVE = {
    "answer_ddim_step": (
        "def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_s, eta, z):\n"
        "    var = eta ** 2 * (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)\n"
        "    gain = (alpha_bar_s / alpha_bar_t).sqrt()\n"
        "    eps_coef = (1 - alpha_bar_s - var).sqrt() - gain * (1 - alpha_bar_t).sqrt()\n"
        "    return gain * x_t + eps_coef * eps + var.sqrt() * z\n"
    ),
    "answer_cfg_combine": "def cfg_combine(eps_cond, eps_uncond, w):\n    return eps_cond + w * (eps_cond - eps_uncond)\n",
    "answer_guided_eps": (
        "def guided_eps(eps, grad_log_p_y, alpha_bar_t, scale):\n"
        "    root = torch.sqrt(1 - alpha_bar_t)\n"
        "    score = -eps / root + scale * grad_log_p_y\n"
        "    return -root * score\n"
    ),
    "answer_posterior_variance": (
        "def posterior_variance(alpha_bar_t, alpha_bar_s):\n"
        "    return (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)\n"
    ),
    "answer_mixture_score": (
        "def mixture_score(x, alpha_bar, means, std, weights):\n"
        "    v = alpha_bar * std ** 2 + 1 - alpha_bar\n"
        "    logs, grads = [], []\n"
        "    for m, p in zip(means, weights):\n"
        "        centre = math.sqrt(alpha_bar) * m\n"
        "        logs.append(torch.log(p) - (x - centre) ** 2 / (2 * v) - 0.5 * math.log(2 * math.pi * v))\n"
        "        grads.append((centre - x) / v)\n"
        "    logs = torch.stack(logs)\n"
        "    r = torch.exp(logs - torch.logsumexp(logs, dim=0))\n"
        "    return (r * torch.stack(grads)).sum(dim=0)\n"
    ),
    "answer_cfg_gaussian": (
        "def cfg_gaussian(mu_c, sigma2, mu, tau2, w):\n"
        "    eta1 = torch.tensor((1 + w) * mu_c / sigma2 - w * mu / tau2, dtype=torch.float64)\n"
        "    eta2 = torch.tensor(-0.5 * (1 + w) / sigma2 + 0.5 * w / tau2, dtype=torch.float64)\n"
        "    return torch.stack([-eta1 / (2 * eta2), -1 / (2 * eta2)])\n"
    ),
}

DERIVATION_FREE = {
    "answer_posterior_variance": (  # the forward jump's variance, not the posterior's
        "def posterior_variance(alpha_bar_t, alpha_bar_s):\n    return 1 - alpha_bar_t / alpha_bar_s\n"
    ),
    "answer_mixture_score": (  # the score of the clean mixture: alpha_bar ignored
        "def mixture_score(x, alpha_bar, means, std, weights):\n"
        "    log_joint = torch.log(weights) - 0.5 * (x[:, None] - means) ** 2 / std ** 2\n"
        "    r = torch.softmax(log_joint, dim=1)\n"
        "    return (r * (means - x[:, None]) / std ** 2).sum(dim=1)\n"
    ),
    "answer_cfg_gaussian": (  # "guidance sharpens the class by 1 + w", the mean left where it was
        "def cfg_gaussian(mu_c, sigma2, mu, tau2, w):\n"
        "    return torch.tensor([mu_c, sigma2 / (1 + w)], dtype=torch.float64)\n"
    ),
}


def students() -> dict:
    return {
        "correct": json.loads(SOLUTION.read_text()),
        "alternative": with_answers(SOLUTION, ALTERNATIVE),
        "untouched": EXERCISE.read_text(),
        "derivation_free": with_answers(SOLUTION, DERIVATION_FREE),
        "wrong_cfg_sign": with_answers(SOLUTION, {"answer_cfg_combine": ("(1 + w) * eps_cond - w * eps_uncond",
                                                               "(1 - w) * eps_cond + w * eps_uncond")}),
        "policy_library": with_answers(SOLUTION, {
            "answer_ddim_step": "def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_s, eta, z):\n"
                                "    from course_lib.diffusion.ddim import ddim_step as reference\n"
                                "    return reference(x_t, eps, alpha_bar_t, alpha_bar_s, eta, z)[0]\n"}),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    return grade_cohort(tmp_path_factory.mktemp("grade_07"), "07", students())


# student -> (total, status, {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (20, "ok", {}),
    "alternative": (20, "ok", {}),
    "untouched": (0, "error", {task: "not implemented yet" for task in POINTS}),
    "derivation_free": (8, "ok", {task: "wrong value" for task in DERIVED}),
    "wrong_cfg_sign": (18, "ok", {"cfg_combine": "wrong value"}),
    "policy_library": (0, "policy", {"ddim_step": "course_lib.diffusion"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_grades_and_reasons(graded, student):
    assert_grade(graded, student, EXPECTED[student], POINTS)


def test_set_layout_points_and_policy():
    forbidden = assert_set_layout(SOLUTION, EXERCISE, POINTS, 6)
    assert all("course_lib.diffusion" in names for names in forbidden.values())
    assert "torch.distributions" in forbidden["mixture_score"]


def test_check_cells_do_not_show_or_use_other_answers():
    """A task's visible check calls only its own function and prints no values of it."""
    assert_checks_keep_to_their_task(EXERCISE, SOLUTION)
