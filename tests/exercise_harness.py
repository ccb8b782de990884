"""What every exercise-set test (tests/test_exercises_NN.py) does, written once.

A set's test builds a cohort of students from its source notebook (the solution, equivalent
answers, the untouched exercise, derivation-free answers, a policy breach), grades them all with
the command instructors use, and compares each student's grades and reasons with what it expects.

    rows, records = grade_cohort(tmp_dir, "07", {"correct": nb, ...})
    assert_grade((rows, records), "correct", (20, "ok", {}), POINTS)

Everything is written inside the folder the test passes in (its tmp_path).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from course_lib.__main__ import main as course_main
from course_lib.assignments.source import load_set

ROOT = Path(__file__).resolve().parents[1]


def grade_id(cell: dict) -> str | None:
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


def with_answers(solution: Path, replacements: dict) -> dict:
    """The solution notebook with some answer cells changed.

    ``replacements``: {grade_id: new source}, or {grade_id: (old, new)} to replace a substring
    (which must occur in the solution's cell).
    """
    nb = json.loads(solution.read_text())
    for cell in nb["cells"]:
        change = replacements.get(grade_id(cell))
        if change is None:
            continue
        source = "".join(cell["source"])
        if isinstance(change, tuple):
            assert change[0] in source, f"{grade_id(cell)}: {change[0]!r} not in the solution"
            source = source.replace(*change)
        else:
            source = change
        cell["source"] = source
    return nb


def grade_cohort(base: Path, set_number: str, students: dict, workers: int = 2) -> tuple[dict, dict]:
    """Grade ``students`` ({name: notebook dict or JSON text}) with
    ``python -m course_lib grade NN base/subs --out base/results --seed 7``.

    Returns (grades.csv rows by student, the JSON record of each student).
    """
    (base / "subs").mkdir()
    for student, nb in students.items():
        (base / "subs" / f"{student}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb))
    args = ["grade", set_number, str(base / "subs"), "--out", str(base / "results"), "--seed", "7",
            "--solutions", str(ROOT / "solutions"), "--workers", str(workers)]
    assert course_main(args) == 0
    rows = {r["student"]: r for r in csv.DictReader((base / "results" / "grades.csv").open())}
    records = {s: json.loads((base / "results" / f"{s}.json").read_text()) for s in rows}
    return rows, records


def assert_grade(graded: tuple[dict, dict], student: str, expected: tuple, points: dict) -> None:
    """``expected`` = (total, status, {task: substring of its reason}); tasks not named score full
    marks (or 0 when the total is 0). A status of None is not compared."""
    rows, records = graded
    total, status, reasons = expected
    row, record = rows[student], records[student]
    assert (float(row["total"]), row["max"]) == (total, str(sum(points.values()))), record["tasks"]
    if status is not None:
        assert row["status"] == status, (row["status"], record["tasks"])
    for task, task_points in points.items():
        want = 0 if (task in reasons or total == 0) else task_points
        assert float(row[task]) == want, (task, record["tasks"][task])
    for task, text in reasons.items():
        reason = record["tasks"][task]["reason"].replace("'", "`")
        assert text.replace("'", "`") in reason, record["tasks"][task]


def assert_checks_keep_to_their_task(exercise: Path, solution: Path, allowed: dict | None = None) -> None:
    """A task's visible check calls no other task's answer (its graded functions, or a function named
    like the task) except those in ``allowed[task]``, and prints nothing but a line that names the
    task and says it passed."""
    names = {t.grade_id: {t.grade_id} | {c.function for c in t.checks} for t in load_set(solution).tasks}
    allowed = allowed or {}
    for cell in json.loads(exercise.read_text())["cells"]:
        task = grade_id(cell)
        if task not in names:
            continue
        source = "".join(cell["source"])
        for other_names in names.values():
            for name in other_names - names[task] - set(allowed.get(task, ())):
                assert f"{name}(" not in source, f"the check of {task} calls {name}"
        printed = [line for line in source.splitlines() if line.lstrip().startswith("print(")]
        assert all(task in line and "passed" in line for line in printed), f"{task}: the check prints {printed}"


def assert_set_layout(solution: Path, exercise: Path, points: dict, n_answers: int,
                      allowed_imports: tuple = ("torch", "math", "numpy")) -> dict:
    """The set's points per task and allowed imports, drawn hidden inputs for every task, and a
    student version without solutions or hidden checks whose ``n_answers`` answer cells raise
    NotImplementedError. Returns {task: the names its checks forbid}, for a set's own assertions."""
    exercise_set = load_set(solution)
    assert {t.grade_id: t.points for t in exercise_set.tasks} == points
    assert exercise_set.allowed_imports == list(allowed_imports)
    assert all(sum(c.drawn for c in t.checks) >= 1 for t in exercise_set.tasks), "every task needs drawn inputs"
    text = exercise.read_text()
    assert "BEGIN SOLUTION" not in text and "grade_check" not in text
    answers = [c for c in json.loads(text)["cells"] if c["metadata"].get("nbgrader", {}).get("solution")]
    assert len(answers) == n_answers and all("raise NotImplementedError()" in "".join(c["source"]) for c in answers)
    return {t.grade_id: {n for c in t.checks for n in c.forbid} for t in exercise_set.tasks}
