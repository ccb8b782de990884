"""Grading a whole folder: worker pool, atomic per-student files, resume, and ``grades.csv``.

Files in RESULTS (all written by this process only, each atomically: temp file + rename):

* ``<id>.feedback.md`` then ``<id>.json`` as soon as a submission is graded (``id``: see
  ``submissions``) -- the JSON is written last and marks the submission as done;
* ``grades.csv`` at the end, one row per submission (display name, id, the file as given), from
  the records held in memory; any result file that differs from them is rewritten and reported
  (a sandboxed submission cannot reach this folder; this guards ``--unsafe-no-sandbox`` runs).

A rerun skips a student whose JSON exists for the same source, grading seed and submission bytes
and carries a valid signature (``state.sign``: HMAC under a key in ``RESULTS/.grader/``), unless
``force``; so an interrupted run loses nothing, and a forged record is simply graded again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from course_lib.assignments.feedback import render
from course_lib.assignments.grading import file_sha256, grade_submission, reference_outputs
from course_lib.assignments.sandbox import Limits, require_sandbox
from course_lib.assignments.source import ExerciseSet
from course_lib.assignments.state import load_key, sign, verify
from course_lib.assignments.submissions import Submission, display_name, open_submissions


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _record_text(record: dict) -> str:
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def _previous(out: Path, sub: Submission, exercise_set: ExerciseSet, key: bytes) -> dict | None:
    """The stored record of this student if this grader signed it, for the same source, seed and bytes."""
    try:
        record = json.loads((out / f"{sub.id}.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not verify(key, record):
        return None
    current = file_sha256(sub.path) if sub.path else None
    if (
        record.get("source_sha256") == exercise_set.sha256
        and record.get("seed") == exercise_set.seed
        and record.get("submission_sha256") == current
        and record.get("id") == sub.id
    ):
        return record
    return None


def grades_csv(records: list[dict], exercise_set: ExerciseSet) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    tasks = [t.grade_id for t in exercise_set.tasks]
    writer.writerow(["student", "id", "submission"] + tasks + ["total", "max", "status"])
    for r in sorted(records, key=lambda r: r["id"]):
        writer.writerow(
            [r["student"], r["id"], display_name(r["submission"] or "", limit=None)]
            + [f"{r['tasks'][t.grade_id]['points']:g}" for t in exercise_set.tasks]
            + [f"{r['total']:g}", f"{r['max']:g}", r["status"]]
        )
    return buffer.getvalue()


def _internal_error(sub: Submission, exercise_set: ExerciseSet, exc: BaseException) -> dict:
    """A record for a bug in the grader itself: the run goes on, the instructor sees the traceback."""
    tasks = {
        t.grade_id: {"points": 0.0, "max": t.points, "result": "error", "reason": "internal grader error"}
        for t in exercise_set.tasks
    }
    return {
        "id": sub.id,
        "student": sub.name,
        "set": exercise_set.name,
        "source_sha256": exercise_set.sha256,
        "seed": exercise_set.seed,
        "submission": sub.given,
        "submission_sha256": None,
        "max": exercise_set.max_points,
        "tasks": tasks,
        "total": 0.0,
        "status": "error",
        "timings": {},
        "notes": [
            "internal grader error (please report it): " + "".join(traceback.format_exception(exc))[-800:]
        ],
    }


def grade_folder(
    exercise_set: ExerciseSet,
    submissions: Path,
    out: Path,
    *,
    workers: int | None = None,
    limits: Limits | None = None,
    force: bool = False,
    sandbox: bool = True,
    log=print,
) -> list[dict]:
    """Grade every submission in ``submissions`` (folder or .zip) into ``out``; return the records.

    ``sandbox=False`` (``--unsafe-no-sandbox``) runs students without bubblewrap: only for trusted work.
    """
    limits = limits or Limits()
    order = [t.grade_id for t in exercise_set.tasks]
    if sandbox:
        require_sandbox()  # before anything is written: no sandbox, no grading
    else:
        log(
            "warning: --unsafe-no-sandbox: student code runs as "
            + ("root" if os.getuid() == 0 else "you")
            + ", can read and write your files and reach the network; grade only work you trust"
        )
    out.mkdir(parents=True, exist_ok=True)
    key = load_key(out)
    with tempfile.TemporaryDirectory(prefix="course-submissions-") as unpacked:
        subs = open_submissions(Path(submissions), exercise_set.name, Path(unpacked) / "zip")
        done = {} if force else {s.id: r for s in subs if (r := _previous(out, s, exercise_set, key))}
        todo = [s for s in subs if s.id not in done]
        log(
            f"{len(subs)} submission(s) of {exercise_set.name}: {len(done)} already graded, "
            f"{len(todo)} to grade"
        )
        reference = reference_outputs(exercise_set, limits, sandbox) if todo else []
        records = dict(done)
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            futures = {
                pool.submit(grade_submission, exercise_set, s, reference, limits, sandbox): s for s in todo
            }
            for future in as_completed(futures):
                sub = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - one student never stops the run
                    record = _internal_error(sub, exercise_set, exc)
                t0 = time.perf_counter()
                write_atomic(out / f"{sub.id}.feedback.md", render(record, order))
                record["timings"]["write_s"] = time.perf_counter() - t0
                record = sign(key, record)
                write_atomic(out / f"{sub.id}.json", _record_text(record))
                records[sub.id] = record
                log(f"  {sub.given}: {record['total']:g}/{record['max']:g} {record['status']}")
    for sid, record in records.items():  # undo anything written into the results folder meanwhile
        for name, text in (
            (f"{sid}.json", _record_text(record)),
            (f"{sid}.feedback.md", render(record, order)),
        ):
            path = out / name
            try:
                same = path.read_text(encoding="utf-8") == text
            except (OSError, UnicodeDecodeError):
                same = False
            if not same:
                log(f"warning: {path} changed during grading; rewritten from the grader's record")
                write_atomic(path, text)
    write_atomic(out / "grades.csv", grades_csv(list(records.values()), exercise_set))
    return [records[s.id] for s in subs]
