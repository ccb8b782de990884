"""Exercise set 03 (VAEs and discrete latents), graded by the real grader in one run, and its hidden inputs checked.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 03 SUBMISSIONS --out RESULTS --seed 7``:

* ``correct``: the solution itself -> 24/24;
* ``alternative``: equivalent answers written differently (sigma as sqrt(exp(log_var)); the KL in Kingma &
  Welling's arrangement; the reconstruction through binary_cross_entropy_with_logits; the log-mean-exp with
  the maximum taken out by hand; the quantiser's gradients written out instead of autograd; the smallest gap
  as the KL between the best diagonal q and the posterior; the least-squares code by lstsq) -> 24/24, so
  the hidden checks accept any correct answer;
* ``untouched``: the generated exercise -> 0;
* ``derivation_free``: "a Gaussian q can match a Gaussian posterior, so the smallest gap is 0" (the diagonal
  restriction ignored), and beta -> 0 answered with the beta = 1 posterior -> 16/24;
* ``naive_iwae``: log of the mean of exp(log w), which underflows with hundreds of pixels -> that task 0 (20/24);
* ``no_straight_through``: z_q = e_k without z_e + sg[z_q - z_e], so the decoder's gradient never reaches
  the encoder -> that task 0 (20/24).

That ``exercises/03_*.ipynb`` matches the source is tested for every set in test_assignments_source.py.
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
SOLUTION = ROOT / "solutions" / "03_vae.ipynb"
EXERCISE = ROOT / "exercises" / "03_vae.ipynb"
POINTS = {"reparameterize": 2, "gaussian_kl": 2, "negative_elbo": 4, "iwae_estimate": 4, "vector_quantize": 4,
          "min_gap_diagonal": 4, "beta_limits": 4}

ALTERNATIVE = {
    "answer_reparameterize": (
        "def reparameterize(mu, log_var, eps):\n"
        "    return eps * torch.sqrt(torch.exp(log_var)) + mu\n"
    ),
    "answer_gaussian_kl": (
        "def gaussian_kl(mu, log_var):\n"
        "    return -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)\n"
    ),
    "answer_negative_elbo": (
        "import torch.nn.functional as F\n\n"
        "def negative_elbo(x, W, b, mu, log_var, eps):\n"
        "    z = mu + eps * torch.exp(log_var / 2)\n"
        "    recon = F.binary_cross_entropy_with_logits(z @ W + b, x, reduction='none').sum(-1)\n"
        "    return recon - 0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)\n"
    ),
    "answer_iwae_estimate": (
        "def iwae_estimate(x, W, b, mu, log_var, eps):\n"
        "    sigma = torch.exp(0.5 * log_var)\n"
        "    z = mu + sigma * eps\n"
        "    logits = z @ W + b\n"
        "    log_lik = (x * logits - torch.logaddexp(torch.zeros_like(logits), logits)).sum(-1)\n"
        "    log_ratio = (-0.5 * z ** 2 + 0.5 * eps ** 2 + torch.log(sigma)).sum(-1)  # log p(z) - log q(z | x)\n"
        "    log_w = log_lik + log_ratio\n"
        "    top = log_w.max(dim=0).values\n"
        "    return top + torch.log(torch.exp(log_w - top).mean(dim=0))\n"
    ),
    "answer_vector_quantize": (  # nearest codes by cdist, gradients written out (no autograd)
        "def vector_quantize(z_e, codebook, upstream, beta):\n"
        "    codes = torch.cdist(z_e, codebook).argmin(dim=1)\n"
        "    e = codebook[codes]\n"
        "    grad_z_e = upstream + 2 * beta * (z_e - e)\n"
        "    grad_codebook = torch.zeros_like(codebook).index_add(0, codes, 2 * (e - z_e))\n"
        "    return codes, e, grad_z_e, grad_codebook\n"
    ),
    "answer_min_gap_diagonal": (  # KL(N(m, diag(1 / Lambda_jj)) || N(m, Lambda^-1)) with the matrices
        "def min_gap_diagonal(W, b, s2, x):\n"
        "    d = W.shape[1]\n"
        "    precision = torch.eye(d, dtype=W.dtype) + W.T @ W / s2\n"
        "    cov_q = torch.diag(1 / torch.diagonal(precision))\n"
        "    cov_post = torch.linalg.inv(precision)\n"
        "    return 0.5 * (torch.trace(precision @ cov_q) - d + torch.linalg.slogdet(cov_post)[1]\n"
        "                  - torch.linalg.slogdet(cov_q)[1])\n"
    ),
    "answer_beta_limits": (
        "def beta_limits(W, b, s2, x):\n"
        "    d = W.shape[1]\n"
        "    mean_small = torch.linalg.lstsq(W, (x - b)[:, None]).solution[:, 0]\n"
        "    return mean_small, torch.zeros(d, d, dtype=W.dtype), torch.zeros(d, dtype=W.dtype), torch.eye(d, dtype=W.dtype)\n"
    ),
}

DERIVATION_FREE = {
    "answer_min_gap_diagonal": (  # "a Gaussian q can be the Gaussian posterior": the diagonal restriction ignored
        "def min_gap_diagonal(W, b, s2, x):\n"
        "    return torch.zeros((), dtype=W.dtype)\n"
    ),
    "answer_beta_limits": (  # beta -> 0 answered with the beta = 1 posterior
        "def beta_limits(W, b, s2, x):\n"
        "    d = W.shape[1]\n"
        "    cov = torch.linalg.inv(torch.eye(d, dtype=W.dtype) + W.T @ W / s2)\n"
        "    return cov @ W.T @ (x - b) / s2, cov, torch.zeros(d, dtype=W.dtype), torch.eye(d, dtype=W.dtype)\n"
    ),
}


def students() -> dict:
    return {
        "correct": json.loads(SOLUTION.read_text()),
        "alternative": with_answers(SOLUTION, ALTERNATIVE),
        "untouched": EXERCISE.read_text(),
        "derivation_free": with_answers(SOLUTION, DERIVATION_FREE),
        "naive_iwae": with_answers(SOLUTION, {"answer_iwae_estimate": (
            "torch.logsumexp(log_lik + log_prior - log_q, dim=0) - math.log(k)",
            "torch.log(torch.exp(log_lik + log_prior - log_q).mean(dim=0))")}),
        "no_straight_through": with_answers(SOLUTION, {"answer_vector_quantize": (
            "z_q = z_e + (e - z_e).detach()", "z_q = e")}),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    return grade_cohort(tmp_path_factory.mktemp("grade_03"), "03", students())


# student -> (total, status, {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (24, "ok", {}),
    "alternative": (24, "ok", {}),
    "untouched": (0, "error", {task: "not implemented yet" for task in POINTS}),
    "derivation_free": (16, "ok", {"min_gap_diagonal": "wrong value", "beta_limits": "wrong value"}),
    "naive_iwae": (20, "ok", {"iwae_estimate": "hidden case 2"}),
    "no_straight_through": (20, "ok", {"vector_quantize": "wrong value"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_grades_and_reasons(graded, student):
    assert_grade(graded, student, EXPECTED[student], POINTS)


def test_set_layout_points_and_policy():
    assert_set_layout(SOLUTION, EXERCISE, POINTS, 7)


def test_check_cells_do_not_show_or_use_other_answers():
    """A task's visible check calls only its own function and prints no values of it."""
    assert_checks_keep_to_their_task(EXERCISE, SOLUTION)


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_hidden_inputs_are_valid_for_any_seed(seed):
    """Every drawn input is legal whatever the grading seed: matching shapes, pixels in {0, 1}, s2 > 0,
    beta >= 0, W of full column rank where the least-squares code must exist."""
    for task in load_set(SOLUTION, seed=seed).tasks:
        for check in task.checks:
            for case in check.cases:
                case = {k: torch.from_numpy(v.array) if isinstance(v, TensorInput) else v for k, v in case.items()}
                if "eps" in case:
                    assert case["mu"].shape == case["log_var"].shape
                    assert case["eps"].shape[-case["mu"].dim():] == case["mu"].shape
                if task.grade_id in ("negative_elbo", "iwae_estimate"):
                    assert set(case["x"].unique().tolist()) <= {0.0, 1.0}
                    assert case["W"].shape == (case["mu"].shape[1], case["x"].shape[1]) and case["b"].shape == (case["x"].shape[1],)
                if task.grade_id == "vector_quantize":
                    assert case["z_e"].shape == case["upstream"].shape and case["z_e"].shape[1] == case["codebook"].shape[1]
                    assert case["beta"] >= 0
                if task.grade_id in ("min_gap_diagonal", "beta_limits"):
                    assert case["s2"] > 0 and case["W"].shape[0] == case["b"].shape[0] == case["x"].shape[0]
                    assert torch.linalg.matrix_rank(case["W"]) == case["W"].shape[1]
