"""Exercise set 06 (DDPM), graded by the real grader in one run, and its hidden-test data checked.

Students, all made from the source notebook and graded together with
``python -m course_lib grade 06 SUBMISSIONS --out RESULTS``:

* ``correct``: the solution itself -> 20/20;
* ``alternative``: other, equivalent formulas (alpha_t = alpha_bar_t / alpha_bar_{t-1}, a Python loop
  for the schedule, ``mse_loss``, the sampler step through the predicted x_0 and ``torch.where``)
  -> 20/20, so the hidden checks accept any correct answer, not only the reference's algebra;
* ``untouched``: the generated exercise -> 0;
* ``wrong_posterior_variance``: beta_t instead of beta_tilde_t -> that task 0, the others full;
* ``policy_reference_kl``: calls ``course_lib.distributions.gaussian_kl`` -> policy, 0.

That ``exercises/06_*.ipynb`` matches the source is tested for every set in test_assignments_source.py.
"""

import csv
import json
from pathlib import Path

import pytest
import torch

from course_lib.__main__ import main as course_main
from course_lib.assignments.checks import TensorInput
from course_lib.assignments.source import load_set

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "06_diffusion_ddpm.ipynb"
EXERCISE = ROOT / "exercises" / "06_diffusion_ddpm.ipynb"
POINTS = {
    "gaussian_kl": 3,
    "schedule_linear": 2,
    "q_sample": 3,
    "q_posterior_mean_variance": 4,
    "l_simple": 4,
    "p_sample_step": 4,
}

ALTERNATIVE = {
    "answer_gaussian_kl": (
        "def gaussian_kl(mean1, log_var1, mean2, log_var2):\n"
        "    log_sigma_ratio = 0.5 * (log_var2 - log_var1)  # log(sigma_2 / sigma_1)\n"
        "    spread = torch.exp(log_var1) + (mean1 - mean2) ** 2\n"
        "    return log_sigma_ratio + spread / (2 * torch.exp(log_var2)) - 0.5\n"
    ),
    "answer_schedule_linear": (
        "def schedule_linear(T, beta_1=1e-4, beta_T=0.02):\n"
        "    betas = [0.0] + [beta_1 + (t - 1) / (T - 1) * (beta_T - beta_1) for t in range(1, T + 1)]\n"
        "    alpha_bars, product = [1.0], 1.0\n"
        "    for beta in betas[1:]:\n"
        "        product *= 1 - beta\n"
        "        alpha_bars.append(product)\n"
        "    return torch.tensor(betas, dtype=torch.float64), torch.tensor(alpha_bars, dtype=torch.float64)\n"
    ),
    "answer_q_sample": (
        "def q_sample(x0, t, eps, alpha_bars):\n"
        "    a = alpha_bars.to(x0.dtype)[t].view(-1, *[1] * (x0.ndim - 1))\n"
        "    return a.sqrt() * x0 + (1 - a).sqrt() * eps\n"
    ),
    "answer_q_posterior": (
        "def q_posterior_mean_variance(x0, x_t, t, betas, alpha_bars):\n"
        "    alpha_t = alpha_bars[t] / alpha_bars[t - 1]\n"
        "    shape = (-1,) + (1,) * (x0.dim() - 1)\n"
        "    denom = 1 - alpha_bars[t]\n"
        "    mean = ((alpha_bars[t - 1].sqrt() * (1 - alpha_t) / denom).view(shape) * x0\n"
        "            + (alpha_t.sqrt() * (1 - alpha_bars[t - 1]) / denom).view(shape) * x_t)\n"
        "    return mean, (1 - alpha_bars[t - 1]) * (1 - alpha_t) / denom\n"
    ),
    "answer_l_simple": (
        "def l_simple(eps_model, x0, t, eps, alpha_bars):\n"
        "    a = alpha_bars[t].view(-1, *[1] * (x0.dim() - 1))\n"
        "    x_t = torch.sqrt(a) * x0 + torch.sqrt(1 - a) * eps\n"
        "    return torch.nn.functional.mse_loss(eps_model(x_t, t), eps)\n\n\n"
        "def l_simple_linear_model(x0, t, eps, alpha_bars, weight, shift):\n"
        "    def eps_model(x_t, t):\n"
        "        return weight * x_t + shift * per_example(t.to(x_t.dtype), x_t)\n\n"
        "    return l_simple(eps_model, x0, t, eps, alpha_bars)\n"
    ),
    "answer_p_sample_step": (
        "def p_sample_step(x_t, t, eps_pred, z, betas, alpha_bars, sigma2):\n"
        "    ab = per_example(alpha_bars[t], x_t)\n"
        "    x0_pred = (x_t - torch.sqrt(1 - ab) * eps_pred) / torch.sqrt(ab)\n"
        "    mean, _ = q_posterior_mean_variance(x0_pred, x_t, t, betas, alpha_bars)\n"
        "    noise = per_example(sigma2[t], x_t).sqrt() * z\n"
        "    return torch.where(per_example(t, x_t) == 1, mean, mean + noise)\n"
    ),
}


def gid(cell):
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


def with_answers(replacements: dict) -> dict:
    """The solution with some answer cells changed: {grade_id: (old, new)} or {grade_id: new code}."""
    nb = json.loads(SOLUTION.read_text())
    for cell in nb["cells"]:
        if gid(cell) in replacements:
            change = replacements[gid(cell)]
            source = "".join(cell["source"])
            if isinstance(change, tuple):
                assert change[0] in source, f"{gid(cell)}: {change[0]!r} not in the solution"
                source = source.replace(*change)
            else:
                source = change
            cell["source"] = source
    return nb


def students() -> dict:
    return {
        "correct": json.loads(SOLUTION.read_text()),
        "alternative": with_answers(ALTERNATIVE),
        "untouched": EXERCISE.read_text(),
        "wrong_posterior_variance": with_answers(
            {
                "answer_q_posterior": (
                    "variance = (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta_t",
                    "variance = beta_t",
                )
            }
        ),
        "policy_reference_kl": with_answers(
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
    base = tmp_path_factory.mktemp("grade_06")
    (base / "subs").mkdir()
    for student, nb in students().items():
        (base / "subs" / f"{student}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb))
    args = ["grade", "06", str(base / "subs"), "--out", str(base / "results")]
    assert course_main(args + ["--solutions", str(ROOT / "solutions"), "--workers", "2"]) == 0
    rows = {r["student"]: r for r in csv.DictReader((base / "results" / "grades.csv").open())}
    records = {s: json.loads((base / "results" / f"{s}.json").read_text()) for s in rows}
    return rows, records


# student -> (total, status, {task: substring of its reason}); tasks not named score full marks
EXPECTED = {
    "correct": (20, "ok", {}),
    "alternative": (20, "ok", {}),
    "untouched": (0, "error", {task: "not implemented yet" for task in POINTS}),
    "wrong_posterior_variance": (
        16,
        "ok",
        {"q_posterior_mean_variance": "wrong value"},
    ),
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
    rows, records = graded
    total, status, reasons = EXPECTED[student]
    row, record = rows[student], records[student]
    assert (float(row["total"]), row["max"], row["status"]) == (total, "20", status), record["tasks"]
    for task, points in POINTS.items():
        expected = 0 if (task in reasons or total == 0) else points
        assert float(row[task]) == expected, (task, record["tasks"][task])
    for task, text in reasons.items():
        reason = record["tasks"][task]["reason"].replace("'", "`")
        assert text.replace("'", "`") in reason, record["tasks"][task]


def test_set_layout_points_and_policy():
    exercise_set = load_set(SOLUTION)
    assert {t.grade_id: t.points for t in exercise_set.tasks} == POINTS
    assert exercise_set.allowed_imports == ["torch", "math", "numpy"]
    forbidden = {t.grade_id: {n for c in t.checks for n in c.forbid} for t in exercise_set.tasks}
    assert forbidden["gaussian_kl"] == {"course_lib.distributions.gaussian_kl", "torch.distributions"}
    assert all("course_lib.diffusion" in names for task, names in forbidden.items() if task != "gaussian_kl")
    text = EXERCISE.read_text()
    assert "BEGIN SOLUTION" not in text and "grade_check" not in text and "coef_x0" not in text
    answers = [c for c in json.loads(text)["cells"] if c["metadata"].get("nbgrader", {}).get("solution")]
    assert len(answers) == 6 and all("raise NotImplementedError()" in "".join(c["source"]) for c in answers)
    assert "def l_simple_linear_model(x0, t, eps, alpha_bars, weight, shift)" in text  # given to students


def _hidden_cases():
    for task in load_set(SOLUTION).tasks:
        for check in task.checks:
            for case in check.cases:
                yield task.grade_id, {
                    k: torch.from_numpy(v.array) if isinstance(v, TensorInput) else v for k, v in case.items()
                }


def test_hidden_schedules_are_consistent_and_cover_t_1_and_t_T():
    """The hidden inputs are valid DDPM inputs, so every correct formula gives the same answer on them."""
    edges = {}
    for task, case in _hidden_cases():
        if "alpha_bars" not in case:
            continue
        alpha_bars, t = case["alpha_bars"].double(), case["t"]
        T = len(alpha_bars) - 1
        assert alpha_bars[0] == 1 and torch.all(alpha_bars[1:] < alpha_bars[:-1]) and alpha_bars[-1] > 0
        if "betas" in case:
            betas = case["betas"].double()
            assert betas[0] == 0 and len(betas) == T + 1
            rtol = 1e-12 if case["alpha_bars"].dtype == torch.float64 else 1e-6
            torch.testing.assert_close(alpha_bars, torch.cumprod(1 - betas, 0), rtol=rtol, atol=0)
        assert t.dtype == torch.int64 and t.dim() == 1 and 1 <= int(t.min()) and int(t.max()) <= T
        data = case.get("x0", case.get("x_t"))
        assert data.shape[0] == len(t)
        edges.setdefault(task, set()).update({"t=1"} if (t == 1).any() else set())
        edges[task].update({"t=T"} if (t == T).any() else set())
        edges[task].add(f"{data.dim()}d-{data.dtype}")
    for task in ("q_sample", "q_posterior_mean_variance", "l_simple", "p_sample_step"):
        assert {"t=1", "t=T"} <= edges[task], f"{task}: hidden cases miss an edge case: {edges[task]}"
        assert any("float32" in e for e in edges[task]), f"{task}: no float32 case"
        assert len(edges[task] - {"t=1", "t=T"}) >= 3, f"{task}: too few shapes/dtypes {edges[task]}"
