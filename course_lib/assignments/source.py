"""An exercise set's single source, ``solutions/NN_name.ipynb``, and the student version made from it.

Cells carry nbgrader's metadata, ``cell.metadata.nbgrader = {grade_id, points, solution, grade,
locked, schema_version}``:

* answer cell: ``solution: true, grade: false`` -- the student writes code here (solution region);
* test cell: ``grade: true, points: P`` -- visible assertions for the student, then a hidden region
  of ``grade_check(...)`` calls (see ``checks``); its ``grade_id`` names the task in grades.csv;
* every other cell is locked text or code that the grader always takes from the source.

Notebook metadata ``course.allowed_imports`` lists the modules an answer may import (default
``DEFAULT_ALLOWED_IMPORTS``). ``make_exercise_text`` is deterministic: same source, same bytes.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_lib.assignments.checks import Check, grading_seed, parse_checks
from course_lib.assignments.markers import (
    BEGIN_SOLUTION,
    CODE_STUB,
    MARKDOWN_STUB,
    has_marker,
    hidden_region,
    strip_hidden,
    strip_solution,
)

DEFAULT_ALLOWED_IMPORTS = [
    "numpy",
    "math",
    "torch",
    "scipy.special",
    "functools",
    "itertools",
    "collections",
    "typing",
    "dataclasses",
    "__future__",
]
SET_NAME = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


@dataclass
class SourceCell:
    kind: str  # "answer", "test", "code" or "markdown"
    source: str  # for a test cell: the visible part only (hidden region removed)
    grade_id: str | None = None


@dataclass
class Task:
    """A graded test cell: its points are earned when every hidden check matches the reference."""

    grade_id: str
    points: float
    checks: list[Check]
    answer_ids: list[str]  # the answer cells that define the checked functions


@dataclass
class ExerciseSet:
    path: Path
    name: str  # file stem, e.g. "00_introduction"
    cells: list[SourceCell]
    tasks: list[Task]
    allowed_imports: list[str]
    sha256: str  # of the source file: a grade is only reused for the same source
    notebook: nbformat.NotebookNode = field(repr=False)
    seed: int = 0  # the grading seed the hidden inputs were drawn with
    warnings: list[str] = field(default_factory=list)  # weaknesses of the set, for its author

    @property
    def answer_ids(self) -> list[str]:
        return [c.grade_id for c in self.cells if c.kind == "answer"]

    @property
    def max_points(self) -> float:
        return sum(t.points for t in self.tasks)


def _nbgrader(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def load_set(path: str | Path, seed: int | None = None) -> ExerciseSet:
    """Read and validate a source notebook; errors name the cell (by grade_id) and the fix.

    Hidden inputs are drawn with ``seed`` (default: ``grading_seed()``, i.e. $COURSE_GRADING_SEED or 0).
    """
    path = Path(path)
    seed = grading_seed() if seed is None else seed
    raw = path.read_bytes()
    nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    cells, tasks, seen, defined_in = [], [], set(), {}
    for index, cell in enumerate(nb.cells):
        meta = _nbgrader(cell)
        gid = meta.get("grade_id")
        where = f"{path.name}, cell {index} ({gid or 'no grade_id'})"
        if gid is not None:
            if gid in seen:
                raise ValueError(f"{where}: grade_id {gid!r} is used twice; grade ids must be unique")
            seen.add(gid)
        if cell.cell_type != "code":
            cells.append(SourceCell("markdown", cell.source, gid))
        elif meta.get("solution"):
            if meta.get("grade"):
                raise ValueError(
                    f"{where}: a cell is either an answer (solution) or a test (grade), not both"
                )
            cells.append(SourceCell("answer", cell.source, gid))
            for stmt in ast.parse(cell.source).body:
                if isinstance(stmt, ast.FunctionDef):
                    defined_in[stmt.name] = gid
        elif meta.get("grade"):
            checks = parse_checks(hidden_region(cell.source, where), where, seed)
            points = float(meta.get("points", 0))
            if points > 0 and not checks:
                raise ValueError(
                    f"{where}: {points:g} points but no grade_check(...) in a hidden-tests region; "
                    "visible assertions alone are not graded"
                )
            cells.append(SourceCell("test", strip_hidden(cell.source, where), gid))
            if checks:
                tasks.append(Task(gid, points, checks, []))
        else:
            cells.append(SourceCell("code", cell.source, gid))
    for task in tasks:
        for check in task.checks:
            if check.function not in defined_in:
                raise ValueError(
                    f"{path.name}, test cell {task.grade_id}: grade_check names {check.function!r}, "
                    "which no answer cell defines with `def`"
                )
            if defined_in[check.function] not in task.answer_ids:
                task.answer_ids.append(defined_in[check.function])
    allowed = nb.metadata.get("course", {}).get("allowed_imports", DEFAULT_ALLOWED_IMPORTS)
    warnings = [
        f"{path.name}, test cell {task.grade_id}: no case of grade_check({check.function}, ...) draws an "
        "input at grading time (random_*(...)); a student who reads the source can hard-code its outputs"
        for task in tasks
        for check in task.checks
        if not check.drawn
    ]
    digest = hashlib.sha256(raw).hexdigest()
    return ExerciseSet(path, path.stem, cells, tasks, list(allowed), digest, nb, seed, warnings)


def make_exercise_text(exercise_set: ExerciseSet) -> str:
    """The student notebook as text: solutions stubbed, hidden tests removed, outputs cleared."""
    src = exercise_set.notebook
    out = nbformat.v4.new_notebook()
    out.metadata = {k: src.metadata[k] for k in ("kernelspec", "course") if k in src.metadata}
    out.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(src.cells):
        meta = _nbgrader(cell)
        where = f"{exercise_set.path.name}, cell {index}"
        source = cell.source
        if meta.get("solution"):
            if has_marker(source, BEGIN_SOLUTION):
                source = strip_solution(source, cell.cell_type, where)
            else:  # the whole cell is the answer
                source = "\n".join(CODE_STUB if cell.cell_type == "code" else MARKDOWN_STUB)
        if meta.get("grade"):
            source = strip_hidden(source, where)
        new = (nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell)(
            source
        )
        new.id = cell.get("id") or f"cell-{index}"
        new.metadata = {"nbgrader": dict(meta)} if meta else {}
        out.cells.append(new)
    nbformat.validate(out)
    return nbformat.writes(out) + "\n"


def find_sets(solutions_dir: str | Path) -> list[Path]:
    """All ``NN_name.ipynb`` sources, in order."""
    return sorted(p for p in Path(solutions_dir).glob("*.ipynb") if SET_NAME.match(p.name))


def find_set(number: str, solutions_dir: str | Path) -> Path:
    """The source of set ``number`` ("00" or "0" or "00_introduction")."""
    sets = find_sets(solutions_dir)
    key = number if "_" in number else f"{int(number):02d}_" if number.isdigit() else number
    matches = [p for p in sets if p.stem == key or p.name.startswith(key)]
    if len(matches) != 1:
        names = ", ".join(p.stem for p in sets) or "none"
        raise SystemExit(f"error: no single exercise set {number!r} in {solutions_dir} (sets found: {names})")
    return matches[0]
