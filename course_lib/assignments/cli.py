"""The commands ``make-exercises [--check]`` and ``grade NN SUBMISSIONS --out RESULTS``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from course_lib.assignments.sandbox import REPO_ROOT, Limits


def _default_dir(name: str) -> Path:
    """``./name`` when it exists (running from a checkout), else the one beside the installed package."""
    here = Path.cwd() / name
    return here if here.is_dir() else REPO_ROOT / name


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--solutions", type=Path, default=None, help="folder of NN_*.ipynb sources (default: solutions/)"
    )
    if name == "make-exercises":
        parser.add_argument(
            "--exercises", type=Path, default=None, help="output folder (default: exercises/)"
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="write nothing; exit 1 if a file in exercises/ differs from what would be written",
        )
        return
    parser.add_argument("set", help="exercise set number or name, e.g. 00")
    parser.add_argument(
        "submissions", type=Path, help="folder (one .ipynb or one sub-folder per student) or .zip"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="results folder (grades.csv, <student>.json/.feedback.md)"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="parallel submissions (default: all cores)"
    )
    parser.add_argument("--force", action="store_true", help="regrade students that already have a result")
    parser.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run submissions without bubblewrap (only for work you trust: a submission can then read "
        "and change your files, other students' results included)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="grading seed the hidden inputs are drawn from (default: $COURSE_GRADING_SEED, else one "
        "drawn on the first run and kept in RESULTS/.grader/seed); keep it private until grades are out",
    )
    defaults = Limits()
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=defaults.cell_timeout,
        help="seconds per cell and per graded function (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        help="seconds per submission, wall clock (default %(default)s)",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=defaults.memory_mb,
        help="memory limit per submission in MB (whole sandbox, and address space per process; "
        "torch needs ~1000) (default %(default)s)",
    )


def run(name: str, args: argparse.Namespace) -> int:
    """Errors in the source (markers, metadata, a solution that fails its own checks) end with a message."""
    try:
        return _run(name, args)
    except (ValueError, RuntimeError) as exc:  # SandboxUnavailable included
        print(f"error: {exc}")
        return 2


def _run(name: str, args: argparse.Namespace) -> int:
    from course_lib.assignments.source import find_set, find_sets, load_set, make_exercise_text

    solutions = args.solutions or _default_dir("solutions")
    if name == "make-exercises":
        exercises = args.exercises or _default_dir("exercises")
        stale = []
        for path in find_sets(solutions):
            exercise_set = load_set(path)
            for warning in exercise_set.warnings:
                print(f"warning: {warning}")
            text = make_exercise_text(exercise_set)
            target = exercises / path.name
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            stale.append(target)
            if not args.check:
                exercises.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target}")
        if args.check and stale:
            print("out of date (run `python -m course_lib make-exercises`): " + ", ".join(map(str, stale)))
            return 1
        return 0

    from course_lib.assignments.results import grade_folder
    from course_lib.assignments.sandbox import require_sandbox
    from course_lib.assignments.state import resolve_seed

    if not args.submissions.exists():
        raise ValueError(f"{args.submissions} does not exist: give a folder of submissions or a .zip of one")
    if not args.unsafe_no_sandbox:
        require_sandbox()  # before anything is written
    seed, origin = resolve_seed(args.out, args.seed)
    exercise_set = load_set(find_set(args.set, solutions), seed=seed)
    print(f"hidden inputs drawn with the grading seed from {origin}")
    for warning in exercise_set.warnings:
        print(f"warning: {warning}")
    limits = Limits(cell_timeout=args.cell_timeout, timeout=args.timeout, memory_mb=args.memory_mb)
    records = grade_folder(
        exercise_set,
        args.submissions,
        args.out,
        workers=args.workers,
        limits=limits,
        force=args.force,
        sandbox=not args.unsafe_no_sandbox,
    )
    counts = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    print(
        f"graded {len(records)} submission(s): "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"; see {args.out / 'grades.csv'}"
    )
    return 0
