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

import csv
import json
from pathlib import Path

import pytest
import torch

from course_lib.__main__ import main as course_main
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
        "derivation_free": with_answers(DERIVATION_FREE),
        "wrong_coupling": with_answers({"answer_affine_coupling": ("s.sum(dim=1)\n    return", "torch.exp(s).sum(dim=1)\n    return")}),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run with the command instructors use; returns (grades.csv rows, JSON records)."""
    base = tmp_path_factory.mktemp("grade_05")
    (base / "subs").mkdir()
    for student, nb in students().items():
        (base / "subs" / f"{student}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb))
    args = ["grade", "05", str(base / "subs"), "--out", str(base / "results"), "--seed", "7"]
    assert course_main(args + ["--solutions", str(ROOT / "solutions"), "--workers", "2"]) == 0
    rows = {r["student"]: r for r in csv.DictReader((base / "results" / "grades.csv").open())}
    records = {s: json.loads((base / "results" / f"{s}.json").read_text()) for s in rows}
    return rows, records


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
    assert all(sum(c.drawn for c in t.checks) >= 1 for t in exercise_set.tasks), "every task needs drawn inputs"
    text = EXERCISE.read_text()
    assert "BEGIN SOLUTION" not in text and "grade_check" not in text
    answers = [c for c in json.loads(text)["cells"] if c["metadata"].get("nbgrader", {}).get("solution")]
    assert len(answers) == 6 and all("raise NotImplementedError()" in "".join(c["source"]) for c in answers)


def test_check_cells_do_not_show_or_use_other_answers():
    """A task's visible check calls only its own function and prints no values of it."""
    nb = json.loads(EXERCISE.read_text())
    for cell in nb["cells"]:
        task = gid(cell)
        if task not in POINTS:
            continue
        source = "".join(cell["source"])
        for other in POINTS:
            if other != task:
                assert f"{other}(" not in source, f"the check of {task} calls {other}"
        printed = [line for line in source.splitlines() if line.lstrip().startswith("print(")]
        assert all(task in line and "passed" in line for line in printed), f"{task}: the check prints {printed}"


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
