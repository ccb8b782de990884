"""``python -m course_lib release OUT/``: the course as a cohort gets it when the solutions stay private.

Copies the course (the files git tracks, or the whole tree outside git) into OUT, leaving out:

* ``solutions/``: the solutions and every hidden check;
* Python files outside ``course_lib/`` that read ``solutions/`` (the grader's and the sets' tests,
  the grading benchmark): they cannot run without it.

Before copying, the exercises of the sets it releases must be up to date with their sources;
after copying, every notebook in OUT is read again and the release is refused (OUT removed) if
one still holds a solution region, a hidden-tests region or a ``grade_check`` call.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from course_lib.assignments.markers import BEGIN_HIDDEN, BEGIN_SOLUTION

SKIP_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    ".ipynb_checkpoints",
    ".pytest_cache",
    "data",
    "runs",
    "build",
    "dist",
}
SECRETS = (BEGIN_SOLUTION, BEGIN_HIDDEN, "grade_check(")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="new (or empty) folder to write the student release into")
    here = Path.cwd()
    parser.add_argument(
        "--root",
        type=Path,
        default=here if (here / "exercises").is_dir() else Path(__file__).resolve().parents[2],
        help="the course checkout to copy (default: this folder if it has exercises/, else the package's)",
    )


def course_files(root: Path) -> list[Path]:
    """Files of the course, relative to ``root``: git's tracked files, else the tree minus build clutter."""
    if (root / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True
        ).stdout.decode()
        return [Path(p) for p in listed.split("\0") if p and (root / p).is_file()]
    return [
        p.relative_to(root)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not set(p.relative_to(root).parts) & SKIP_DIRS
    ]


def left_out(root: Path, path: Path) -> bool:
    """True for what a student release must not contain (see the module docstring)."""
    if path.parts[0] == "solutions":
        return True
    if path.suffix == ".py" and path.parts[0] != "course_lib":
        return "solutions" in (root / path).read_text(encoding="utf-8", errors="replace")
    return False


def _leaks(path: Path) -> list[str]:
    """Secret markers found in a notebook's cells."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (ValueError, AttributeError):
        return [f"{path} is not a readable notebook"]
    text = "\n".join("".join(c.get("source", "")) for c in cells if isinstance(c, dict))
    return [f"{path} contains {marker!r}" for marker in SECRETS if marker in text]


def release(root: Path, out: Path) -> list[Path]:
    """Write the student release of ``root`` into ``out``; return the files left out."""
    from course_lib.assignments.source import find_sets, load_set, make_exercise_text

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder: give a new folder for the release")
    if out.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{out} is inside the course {root}: write the release outside it")
    files = course_files(root)
    for source in find_sets(root / "solutions"):
        if source.relative_to(root) not in files:  # not part of the course yet (untracked)
            continue
        target = root / "exercises" / source.name
        if not target.exists() or target.read_text(encoding="utf-8") != make_exercise_text(load_set(source)):
            raise ValueError(f"{target} is out of date: run `python -m course_lib make-exercises` first")
    skipped = []
    for path in files:
        if left_out(root, path):
            skipped.append(path)
            continue
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / path, out / path)
    leaks = [leak for nb in sorted(out.rglob("*.ipynb")) for leak in _leaks(nb)]
    if leaks:
        shutil.rmtree(out)
        raise ValueError("refusing to release, nothing was written: " + "; ".join(leaks))
    return skipped


def run(name: str, args: argparse.Namespace) -> int:
    try:
        skipped = release(args.root.resolve(), args.out)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote the student release to {args.out}; left out: " + ", ".join(map(str, skipped)))
    return 0
