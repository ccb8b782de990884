"""The course's command line: ``python -m course_lib <command> ...`` (or ``course <command>``).

Each command lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``. This file only lists them, so ``--help`` shows them all in one place.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (command, module, one-line help). Modules are imported only when their command runs.
COMMANDS = [
    ("data", "course_lib.data.cli", "show where each data set is found; download or check the full sets"),
    ("train", "course_lib.cli_models", "train a model (e.g. ddpm) on a data set, with checkpoints and resume"),
    ("sample", "course_lib.cli_models", "draw samples from a trained checkpoint into a PNG grid"),
    ("train-classifier", "course_lib.evaluate_cli", "train the MNIST classifier behind classifier-FID/KID/PR"),
    ("evaluate", "course_lib.evaluate_cli", "score samples (a .pt tensor, e.g. from `sample --tensor`) with FID/KID/PR"),
    ("make-exercises", "course_lib.assignments.cli", "write exercises/ from solutions/ (the single source)"),
    ("grade", "course_lib.assignments.cli", "grade a folder or .zip of student submissions"),
    ("release", "course_lib.assignments.release", "copy the course for students without solutions/ and hidden checks"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib",
        description="Deep generative models course: data, training, sampling, exercises and grading.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main(), after the command is known.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in {c[0] for c in COMMANDS}:
        parser.parse_args(argv or ["--help"])  # prints help or the "invalid choice" error and exits
        return 0
    name = argv[0]
    module_name = next(m for c, m, _ in COMMANDS if c == name)
    module = importlib.import_module(module_name)
    help_text = next(h for c, _, h in COMMANDS if c == name)
    cmd_parser = argparse.ArgumentParser(prog=f"python -m course_lib {name}", description=help_text)
    module.add_arguments(name, cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return int(module.run(name, args) or 0)


if __name__ == "__main__":
    sys.exit(main())
