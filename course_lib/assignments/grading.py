"""Grading one submission, and a folder of them with a worker pool.

Per student (``grade_submission``):

1. read the notebook as JSON (unreadable -> ``invalid-notebook``, 0 points);
2. take the answer cells by ``grade_id``, turn IPython syntax into the plain Python that will run
   (``strip_magics``) and check exactly that text statically (``policy``); a cell that does not
   parse is not run, and is reported as an error;
3. rebuild the notebook: the SOURCE's cells in the source's order, with the student's answer
   cells in place of the solutions (test cells without their hidden region; Markdown dropped);
4. run it in a sandboxed child that calls each graded function on the hidden inputs;
5. compare the returned arrays with the reference outputs (the solution run the same way) in
   this process; a task earns its points only when every hidden case matches.

Visible tests run in the child for the student's benefit; they never count, and whatever the
child prints or reports is only used as explanatory text in the feedback.

Status of a student, first that applies: invalid-notebook, policy, timeout, memory, error, ok.
"""

from __future__ import annotations

import hashlib
import signal
import time

import numpy as np

from course_lib.assignments.markers import strip_magics
from course_lib.assignments.policy import check_policy, syntax_errors
from course_lib.assignments.sandbox import Limits, RunResult, run_job
from course_lib.assignments.source import ExerciseSet
from course_lib.assignments.submissions import InvalidNotebook, Submission, answer_sources, read_cells

STATUS_ORDER = ["invalid-notebook", "policy", "timeout", "memory", "error", "ok"]
_REFERENCE_CACHE: dict[tuple[str, int], list[dict]] = {}


def _calls(exercise_set: ExerciseSet) -> list[tuple[str, list[dict]]]:
    return [(check.function, check.cases) for task in exercise_set.tasks for check in task.checks]


def rebuild(exercise_set: ExerciseSet, answers: dict[str, str]) -> list[dict]:
    """Cells to execute: the source's code cells, with ``answers`` (already plain Python) in place of
    the answer cells; an answer cell missing from ``answers`` is left out."""
    cells = []
    for index, cell in enumerate(exercise_set.cells):
        if cell.kind == "markdown" or (cell.kind == "answer" and cell.grade_id not in answers):
            continue
        source = answers[cell.grade_id] if cell.kind == "answer" else strip_magics(cell.source)
        cells.append({"id": cell.grade_id or f"cell-{index}", "source": source})
    return cells


def reference_outputs(exercise_set: ExerciseSet, limits: Limits, sandbox: bool = True) -> list[dict]:
    """The solution's outputs per call on the drawn inputs, once per source file and grading seed."""
    key = (exercise_set.sha256, exercise_set.seed)
    if key not in _REFERENCE_CACHE:
        answers = {c.grade_id: strip_magics(c.source) for c in exercise_set.cells if c.kind == "answer"}
        result = run_job(rebuild(exercise_set, answers), _calls(exercise_set), limits, sandbox=sandbox)
        problems = [f"cell {cid}: {r['message']}" for cid, r in result.cells.items() if r["status"] != "ok"]
        problems += [
            f"{fn}: {result.calls.get(str(i), {}).get('message', 'no output')}"
            for i, ((fn, _), out) in enumerate(zip(_calls(exercise_set), result.outputs, strict=True))
            if out is None or result.calls.get(str(i), {}).get("status") != "ok"
        ]
        if problems or result.timed_out:
            raise RuntimeError(
                f"the solution {exercise_set.path} does not pass its own checks in the sandbox: "
                + ("; ".join(problems) or "timed out")
                + f"\n{result.log_tail}"
            )
        _REFERENCE_CACHE[key] = result.outputs
    return _REFERENCE_CACHE[key]


def compare(got: dict | None, ref: dict, n_cases: int, rtol: float, atol: float) -> str | None:
    """None when every case matches the reference, else the first problem in words."""
    for c in range(n_cases):
        where = f"hidden case {c + 1} of {n_cases}"
        ref_keys = sorted(k for k in ref if k.startswith(f"c{c}_"))
        got_keys = sorted(k for k in (got or {}) if k.startswith(f"c{c}_"))
        if not got_keys:
            return f"{where}: no output"
        if len(got_keys) != len(ref_keys):
            return f"{where}: returned {len(got_keys)} value(s), expected {len(ref_keys)}"
        for key in ref_keys:
            a, b = got[key], ref[key]
            if a.dtype.kind not in "biuf":
                return f"{where}: returned dtype {a.dtype}, expected numbers"
            if a.shape != b.shape:
                return f"{where}: returned shape {a.shape}, expected {b.shape}"
            a, b = a.astype(np.float64), b.astype(np.float64)
            if (np.isnan(a) & ~np.isnan(b)).any():
                return (
                    f"{where}: returned NaN at {int((np.isnan(a) & ~np.isnan(b)).sum())} of {a.size} entries "
                    "where the expected value is a number"
                )
            if (np.isinf(a) != np.isinf(b)).any():
                return f"{where}: infinite where a finite value is expected, or the other way round"
            close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
            if not close.all():
                error = np.nan_to_num(np.abs(a - b), nan=np.inf)[~close].max()
                return (
                    f"{where}: wrong value at {int((~close).sum())} of {a.size} entries (largest error "
                    f"{error:.3g}; tolerance rtol={rtol:g}, atol={atol:g})"
                )
    return None


def _crash_reason(result: RunResult, limits: Limits) -> tuple[str, str] | None:
    """(status, reason) when the child did not finish normally."""
    if result.timed_out:
        return (
            "timeout",
            f"the notebook timed out after {limits.timeout:g} s (limit for the whole submission)",
        )
    code = result.returncode
    if code in (0, None):
        return None
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        if -code == signal.SIGXCPU:
            return "timeout", f"the notebook used more than {limits.timeout:g} s of CPU time"
        if -code in (signal.SIGKILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
            return (
                "memory",
                f"the grading process was killed by {name} (most often: the memory limit of "
                f"{limits.memory_mb} MB)",
            )
        return "error", f"the grading process was killed by {name}"
    return "error", f"the grading process ended early with exit code {code}"


def grade_submission(
    exercise_set: ExerciseSet, sub: Submission, reference: list[dict], limits: Limits, sandbox: bool = True
) -> dict:
    """The result record of one student (what goes to ``<student>.json``)."""
    t0 = time.perf_counter()
    record = {
        "id": sub.id,
        "student": sub.name,
        "set": exercise_set.name,
        "source_sha256": exercise_set.sha256,
        "seed": exercise_set.seed,
        "submission": sub.given,
        "submission_sha256": file_sha256(sub.path) if sub.path else None,
        "max": exercise_set.max_points,
        "notes": [],
        "timings": {},
    }
    tasks = {
        t.grade_id: {"points": 0.0, "max": t.points, "result": "missing", "reason": ""}
        for t in exercise_set.tasks
    }
    record["tasks"] = tasks
    try:
        if sub.path is None:
            raise InvalidNotebook(sub.problem)
        cells = read_cells(sub.path)
    except (InvalidNotebook, OSError) as exc:
        for task in tasks.values():
            task["result"], task["reason"] = "error", f"invalid notebook: {exc}"
        return _finish(record, "invalid-notebook")

    answers, record["notes"] = answer_sources(cells, exercise_set.answer_ids)
    answers = {gid: strip_magics(code) for gid, code in answers.items()}  # exactly what will run
    broken = syntax_errors(answers)
    flagged = check_policy(
        answers,
        exercise_set.allowed_imports,
        {t.grade_id: [n for c in t.checks for n in c.forbid] for t in exercise_set.tasks},
    )
    job_cells = rebuild(exercise_set, {g: a for g, a in answers.items() if g not in broken})
    record["timings"]["rebuild_s"] = time.perf_counter() - t0
    if len(flagged) == len(tasks):  # nothing could earn a point: do not run the code at all
        for task_id, task in tasks.items():
            task["result"], task["reason"] = "policy", "policy: " + "; ".join(flagged[task_id])
        record["notes"].append("every task broke the policy, so the notebook was not run")
        return _finish(record, "policy")

    result = run_job(job_cells, _calls(exercise_set), limits, sandbox=sandbox)
    record["timings"]["child_s"], record["timings"]["start_s"] = result.wall_s, result.start_s
    record["log_tail"] = result.log_tail  # the child's own output: for the instructor, never trusted
    result.cells.update({gid: {"status": "error", "message": message} for gid, message in broken.items()})
    t1 = time.perf_counter()
    crash = _crash_reason(result, limits)
    statuses, call_index = set(), 0
    for task in exercise_set.tasks:
        entry, problem, status = tasks[task.grade_id], None, "pass"
        for check in task.checks:
            reported = result.calls.get(str(call_index), {})
            mismatch = compare(
                result.outputs[call_index], reference[call_index], len(check.cases), check.rtol, check.atol
            )
            call_index += 1
            if mismatch and problem is None:
                problem, status = mismatch, "fail"
                if reported.get("status") in ("error", "timeout", "memory"):
                    problem, status = f"{check.function}: {reported['message']}", reported["status"]
                elif "no output" in mismatch and crash:
                    status, problem = crash
        missing = [gid for gid in task.answer_ids if gid not in answers]
        if missing:
            status, problem = "missing", f"answer cell {missing[0]} not found in the submission"
        if task.grade_id in flagged:
            status, problem = "policy", "policy: " + "; ".join(flagged[task.grade_id])
        hints = [
            f"answer cell {gid} raised {result.cells[gid]['message']}"
            for gid in task.answer_ids
            if result.cells.get(gid, {}).get("status", "ok") != "ok"
        ]
        if status == "fail" and result.cells.get(task.grade_id, {}).get("status", "ok") != "ok":
            hints.append(f"the visible checks of this cell failed: {result.cells[task.grade_id]['message']}")
        entry["result"] = status
        entry["points"] = task.points if status == "pass" else 0.0
        entry["reason"] = "; ".join([problem or "all hidden cases match the reference"] + hints)
        statuses.add({"fail": "ok", "pass": "ok", "missing": "error"}.get(status, status))
    for gid in exercise_set.answer_ids:  # the functions may still work; the run was not clean
        if result.cells.get(gid, {}).get("status", "ok") != "ok":
            statuses.add(
                result.cells[gid]["status"] if result.cells[gid]["status"] in STATUS_ORDER else "error"
            )
            record["notes"].append(f"answer cell {gid} raised {result.cells[gid]['message']}")
    if crash:
        statuses.add(crash[0])
        record["notes"].append(crash[1])
    record["notes"] += result.notes
    record["timings"]["compare_s"] = time.perf_counter() - t1
    return _finish(record, next(s for s in STATUS_ORDER if s in statuses | {"ok"}))


def _finish(record: dict, status: str) -> dict:
    record["status"] = status
    record["total"] = sum(t["points"] for t in record["tasks"].values())
    return record


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
