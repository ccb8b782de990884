"""Exercise set 04 (GANs), graded by the real grader in one run, and its hidden-test data checked.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 04 SUBMISSIONS --out RESULTS --seed 7``:

* ``correct``: the solution itself -> 23/23;
* ``alternative``: other, equivalent answers (log-sigmoid instead of softplus, 0/0 -> 1/2 by
  ``nan_to_num``, the game value summed piece by piece between the sorted endpoints, the gradients by
  autograd, Algorithm 1 with hand-derived partial derivatives, the rejection rate in log space) -> 23/23, so the hidden checks accept
  any correct answer, not only the reference's algebra;
* ``untouched``: the generated exercise -> 0;
* ``derivation_free``: answers written without the derivations: the saturating and non-saturating
  losses swapped, D* = p_g / (p_data + p_g) (and the game value computed with it), the two generator
  gradients swapped, the rejection rate with M = l*(mu) = -log s + mu^2 / 2 (the log ratio taken where
  the data peak, not at its maximum) -> only the discriminator's loss and Algorithm 1 score (7/23);
* ``naive_logs``: the textbook formulas with ``torch.log(torch.sigmoid(l))``, right for moderate
  logits but infinite or NaN for a sure discriminator -> the three tasks that ask for stability
  score 0 (13/23);
* ``policy_reference``: calls ``course_lib.gan.discriminator_loss`` -> policy, 0.

The hidden inputs are drawn at grading time (``--seed``); ``test_hidden_inputs_are_valid_for_any_seed``
checks, for several seeds, that every drawn input is legal, and ``test_answers_on_other_seeds`` that the
wrong answers fail and the alternatives pass whatever the seed (in-process, without the sandbox).
That ``exercises/04_gan.ipynb`` matches the source is tested for every set in test_assignments_source.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from exercise_harness import (
    assert_checks_keep_to_their_task,
    assert_grade,
    assert_set_layout,
    grade_cohort,
    grade_id,
    with_answers,
)

from course_lib.assignments.checks import TensorInput, to_numpy_outputs
from course_lib.assignments.source import load_set

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "04_gan.ipynb"
EXERCISE = ROOT / "exercises" / "04_gan.ipynb"
POINTS = {
    "discriminator_loss": 3,
    "generator_losses": 3,
    "optimal_discriminator": 2,
    "uniform_game_value": 4,
    "generator_gradients": 4,
    "algorithm1_step": 4,
    "drs_acceptance_rate": 3,
}
DERIVED = ["generator_losses", "optimal_discriminator", "uniform_game_value", "generator_gradients", "drs_acceptance_rate"]
STABLE = ["discriminator_loss", "generator_losses", "generator_gradients"]  # tasks that must survive |logits| >> 1
BCE = {
    "torch.nn.functional.binary_cross_entropy",
    "torch.nn.functional.binary_cross_entropy_with_logits",
    "torch.nn.BCELoss",
    "torch.nn.BCEWithLogitsLoss",
}

ALTERNATIVE = {
    "answer_discriminator_loss": (  # log-sigmoid form
        "def discriminator_loss(logits_real, logits_fake):\n"
        "    log_sigmoid = torch.nn.functional.logsigmoid\n"
        "    return -log_sigmoid(logits_real).mean() - log_sigmoid(-logits_fake).mean()  # 1 - sigma(l) = sigma(-l)\n"
    ),
    "answer_generator_losses": (
        "import torch.nn.functional as F\n\n\n"
        "def generator_loss_saturating(logits_fake):\n"
        "    return F.logsigmoid(-logits_fake).mean()\n\n\n"
        "def generator_loss_non_saturating(logits_fake):\n"
        "    return -F.logsigmoid(logits_fake).mean()\n"
    ),
    "answer_optimal_discriminator": (
        "def optimal_discriminator(p_data, p_g):\n"
        "    d = p_data / (p_data + p_g)\n"
        "    return torch.nan_to_num(d, nan=0.5)  # 0 / 0 where both densities vanish\n"
    ),
    "answer_uniform_game_value": (  # piece by piece between the sorted endpoints, D* at each piece's midpoint
        "def uniform_game_value(a, b, c, d):\n"
        "    points = sorted([a, b, c, d])\n"
        "    total = 0.0\n"
        "    for left, right in zip(points[:-1], points[1:]):\n"
        "        mid = 0.5 * (left + right)\n"
        "        pd = 1 / (b - a) if a <= mid <= b else 0.0\n"
        "        pg = 1 / (d - c) if c <= mid <= d else 0.0\n"
        "        if pd > 0 and pg > 0:\n"
        "            total += (right - left) * (pd * math.log(pd / (pd + pg)) + pg * math.log(pg / (pd + pg)))\n"
        "    return total\n"
    ),
    "answer_generator_gradients": (  # autograd through stable losses
        "def generator_gradients(theta, z, w, b):\n"
        "    t = torch.tensor(theta, dtype=z.dtype, requires_grad=True)\n"
        "    logits = w * (t + z) + b\n"
        "    sat = -torch.nn.functional.softplus(logits).mean()\n"
        "    ns = torch.nn.functional.softplus(-logits).mean()\n"
        "    (g_sat,) = torch.autograd.grad(sat, t, retain_graph=True)\n"
        "    (g_ns,) = torch.autograd.grad(ns, t)\n"
        "    return torch.stack([g_sat, g_ns])\n"
    ),
    "answer_algorithm1_step": (  # the four partial derivatives by hand
        "def algorithm1_step(params, x, z_d, z_g, lr, non_saturating):\n"
        "    w, b, a, c = params.tolist()\n"
        "    for x_i, z_i in zip(x, z_d):\n"
        "        fake = a * z_i + c\n"
        "        r, f = torch.sigmoid(-(w * x_i + b)), torch.sigmoid(w * fake + b)  # 1 - D(x), D(G(z))\n"
        "        grad_w = (r * x_i).mean() - (f * fake).mean()  # d V_hat / d w\n"
        "        grad_b = r.mean() - f.mean()\n"
        "        w, b = w + lr * grad_w.item(), b + lr * grad_b.item()\n"
        "    logits = w * (a * z_g + c) + b\n"
        "    dl = -torch.sigmoid(-logits) if non_saturating else -torch.sigmoid(logits)  # d loss_j / d l_j\n"
        "    grad_a, grad_c = (dl * w * z_g).mean().item(), (dl * w).mean().item()\n"
        "    return torch.tensor([w, b, a - lr * grad_a, c - lr * grad_c], dtype=params.dtype)\n"
    ),
    "answer_drs_acceptance_rate": (  # log of the rate, the peak's location written out
        "def drs_acceptance_rate(mu, s):\n"
        "    x_peak = mu / (1 - s * s)\n"
        "    log_ratio_peak = -math.log(s) - (x_peak - mu) ** 2 / (2 * s * s) + x_peak ** 2 / 2\n"
        "    return math.exp(-log_ratio_peak)\n"
    ),
}

DERIVATION_FREE = {
    "answer_generator_losses": (  # the two losses swapped
        "def generator_loss_saturating(logits_fake):\n"
        "    return torch.nn.functional.softplus(-logits_fake).mean()\n\n\n"
        "def generator_loss_non_saturating(logits_fake):\n"
        "    return -torch.nn.functional.softplus(logits_fake).mean()\n"
    ),
    "answer_optimal_discriminator": (  # D* = p_g / (p_data + p_g)
        "def optimal_discriminator(p_data, p_g):\n"
        "    total = p_data + p_g\n"
        "    return torch.where(total > 0, p_g / torch.where(total > 0, total, 1.0), 0.5)\n"
    ),
    "answer_uniform_game_value": (  # the same bookkeeping with D* = p_g / (p_data + p_g) on the overlap
        "def uniform_game_value(a, b, c, d):\n"
        "    wd, wg = b - a, d - c\n"
        "    overlap = max(0.0, min(b, d) - max(a, c))\n"
        "    return overlap / wd * math.log(wd / (wd + wg)) + overlap / wg * math.log(wg / (wd + wg))\n"
    ),
    "answer_generator_gradients": (  # the two gradients swapped
        "def generator_gradients(theta, z, w, b):\n"
        "    logits = w * (theta + z) + b\n"
        "    return torch.stack([-w * torch.sigmoid(-logits).mean(), -w * torch.sigmoid(logits).mean()])\n"
    ),
    "answer_drs_acceptance_rate": (  # the log ratio evaluated at x = mu instead of at its maximum
        "def drs_acceptance_rate(mu, s):\n"
        "    return math.exp(-(-math.log(s) + mu ** 2 / 2))\n"
    ),
}

NAIVE_LOGS = {  # the textbook formulas with torch.log(torch.sigmoid(...)): right for moderate logits only
    "answer_discriminator_loss": (
        "def discriminator_loss(logits_real, logits_fake):\n"
        "    d_real, d_fake = torch.sigmoid(logits_real), torch.sigmoid(logits_fake)\n"
        "    return -torch.log(d_real).mean() - torch.log(1 - d_fake).mean()\n"
    ),
    "answer_generator_losses": (
        "def generator_loss_saturating(logits_fake):\n"
        "    return torch.log(1 - torch.sigmoid(logits_fake)).mean()\n\n\n"
        "def generator_loss_non_saturating(logits_fake):\n"
        "    return -torch.log(torch.sigmoid(logits_fake)).mean()\n"
    ),
    "answer_generator_gradients": (
        "def generator_gradients(theta, z, w, b):\n"
        "    t = torch.tensor(theta, dtype=z.dtype, requires_grad=True)\n"
        "    d = torch.sigmoid(w * (t + z) + b)\n"
        "    (g_sat,) = torch.autograd.grad(torch.log(1 - d).mean(), t, retain_graph=True)\n"
        "    (g_ns,) = torch.autograd.grad(-torch.log(d).mean(), t)\n"
        "    return torch.stack([g_sat, g_ns])\n"
    ),
}


def students() -> dict:
    return {
        "correct": json.loads(SOLUTION.read_text()),
        "alternative": with_answers(SOLUTION, ALTERNATIVE),
        "untouched": EXERCISE.read_text(),
        "derivation_free": with_answers(SOLUTION, DERIVATION_FREE),
        "naive_logs": with_answers(SOLUTION, NAIVE_LOGS),
        "policy_reference": with_answers(SOLUTION, 
            {
                "answer_discriminator_loss": "def discriminator_loss(logits_real, logits_fake):\n"
                "    from course_lib.gan import discriminator_loss as reference\n"
                "    return reference(logits_real, logits_fake)\n"
            }
        ),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    return grade_cohort(tmp_path_factory.mktemp("grade_04"), "04", students())


# student -> (total, status, {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (23, "ok", {}),
    "alternative": (23, "ok", {}),
    "untouched": (0, "error", {task: "not implemented yet" for task in POINTS}),
    "derivation_free": (7, "ok", {task: "wrong value" for task in DERIVED}),
    "naive_logs": (
        13,
        "ok",
        {
            "discriminator_loss": "infinite where a finite value is expected",
            "generator_losses": "infinite where a finite value is expected",
            "generator_gradients": "returned NaN",
        },
    ),
    "policy_reference": (
        0,
        "policy",
        {
            "discriminator_loss": "course_lib.gan`, the reference implementation",
            "algorithm1_step": "imports `course_lib.gan.discriminator_loss`, which is not allowed",
        },
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_grades_and_reasons(graded, student):
    assert_grade(graded, student, EXPECTED[student], POINTS)


def test_set_layout_points_and_policy():
    forbidden = assert_set_layout(SOLUTION, EXERCISE, POINTS, 7)
    assert all("course_lib.gan" in names for names in forbidden.values())
    for task in ("discriminator_loss", "generator_losses", "algorithm1_step"):
        assert BCE <= forbidden[task], f"{task}: torch's binary cross-entropy must be forbidden"
    assert not load_set(SOLUTION).warnings
    assert "softplus(-" not in EXERCISE.read_text()


def test_check_cells_do_not_show_or_use_other_answers():
    """A task's visible check calls only its own function and prints no values of it."""
    assert_checks_keep_to_their_task(EXERCISE, SOLUTION)


def _cases(seed):
    for task in load_set(SOLUTION, seed=seed).tasks:
        for check in task.checks:
            for case in check.cases:
                yield task.grade_id, check, case


def _tensors(case):
    return {k: torch.from_numpy(v.array.copy()) if isinstance(v, TensorInput) else v for k, v in case.items()}


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_hidden_inputs_are_valid_for_any_seed(seed):
    """Every drawn input is legal (densities >= 0, a < b and c < d, minibatches of matching shapes), and the
    cases meant to be extreme are extreme, whatever the grading seed."""
    seen = {task: set() for task in POINTS}
    for task, _, raw in _cases(seed):
        case = _tensors(raw)
        if task == "optimal_discriminator":
            p, q = case["p_data"], case["p_g"]
            assert p.shape == q.shape and (p >= 0).all() and (q >= 0).all()
            seen[task].update({"both zero"} if ((p == 0) & (q == 0)).any() else set())
        elif task == "uniform_game_value":
            a, b, c, d = (case[k] for k in "abcd")
            assert a < b and c < d, case
            overlap = min(b, d) - max(a, c)
            seen[task].add("nested" if (c >= a and d <= b) or (a >= c and b <= d) else "touching" if overlap == 0
                           else "disjoint" if overlap < 0 else "overlap")
        elif task == "generator_gradients":
            logits = case["w"] * (case["theta"] + case["z"]) + case["b"]
            assert case["z"].dtype == torch.float64 and case["z"].dim() == 1
            seen[task].update({"D(G(z)) = 0"} if (torch.sigmoid(logits) == 0).all() else set())
        elif task == "drs_acceptance_rate":
            assert 0 < case["s"] < 1, case
            seen[task].add("off centre" if abs(case["mu"]) > 0.5 else "near centre")
        elif task == "algorithm1_step":
            assert case["params"].shape == (4,) and case["x"].shape == case["z_d"].shape and case["x"].dim() == 2
            assert case["x"].shape[0] >= 1 and case["x"].shape[1] >= 2 and 0 < case["lr"] < 1
            seen[task].add(bool(case["non_saturating"]))
        else:  # the losses
            logits = torch.cat([v.double() for v in case.values()])
            seen[task].update({"sure"} if logits.abs().max() > 800 else set())
    assert {"nested", "touching", "disjoint"} <= seen["uniform_game_value"], seen["uniform_game_value"]
    assert seen["generator_gradients"] == {"D(G(z)) = 0"} and seen["algorithm1_step"] == {True, False}
    assert "off centre" in seen["drs_acceptance_rate"]
    assert seen["discriminator_loss"] == seen["generator_losses"] == {"sure"}


@pytest.mark.parametrize("seed", [0, 3, 123])
def test_answers_on_other_seeds(seed):
    """In-process (no sandbox): on the hidden inputs of other grading seeds, the alternative answers match the
    solution and every wrong answer fails its task, so the run graded above is not a lucky seed."""
    nb = json.loads(SOLUTION.read_text())

    def namespace(replace):
        names = {}
        for cell in nb["cells"]:
            meta = cell["metadata"].get("nbgrader", {})
            if cell["cell_type"] == "code" and not meta.get("grade"):
                exec("".join(replace.get(grade_id(cell), cell["source"])), names)  # noqa: S102 (the set's own code)
        return names

    spaces = {"solution": namespace({}), "alternative": namespace(ALTERNATIVE),
              "derivation_free": namespace(DERIVATION_FREE), "naive_logs": namespace(NAIVE_LOGS)}
    failing = {"solution": set(), "alternative": set(), "derivation_free": set(DERIVED), "naive_logs": set(STABLE)}
    passed = {(name, task): True for name in spaces for task in POINTS}
    with np.errstate(all="ignore"):
        for task, check, case in _cases(seed):
            reference = to_numpy_outputs(spaces["solution"][check.function](**_tensors(case)))
            assert all(np.isfinite(r).all() for r in reference), (task, case)
            for name, names in spaces.items():
                try:
                    got = to_numpy_outputs(names[check.function](**_tensors(case)))
                except RuntimeError:
                    got = None
                passed[name, task] &= got is not None and all(
                    g.shape == r.shape and np.allclose(g, r, rtol=check.rtol, atol=check.atol)
                    for g, r in zip(got, reference, strict=True)
                )
    for (name, task), ok in passed.items():
        assert ok == (task not in failing[name]), (seed, name, task)
