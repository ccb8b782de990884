"""Grade N generated submissions of set 00 with the default worker pool; record time and overheads.

    python -m benchmarks.grading --n 100        # writes benchmarks/results/grading_n100.json

The submissions are made from the solution: a fifth each correct, untouched (the exercise),
a wrong KL, an exception in one task, and NaN outputs. They are graded twice in the same run,
in bubblewrap sandboxes (what ``grade`` does) and with ``--unsafe-no-sandbox``, so the ratio
of the two is measured under the same machine load. Recorded: the total wall times (reference
run included), and per sandboxed submission the medians of the grader's own timings -- child
start (spawn -> runner ready: sandbox + interpreter + NumPy), child wall time, rebuild (read,
policy check, rebuild), compare, and result write (feedback + JSON, atomic).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.run import RESULTS_DIR, git_commit, host_info
from course_lib.assignments.cgroup import JobCgroup
from course_lib.assignments.grading import _REFERENCE_CACHE, reference_outputs
from course_lib.assignments.results import grade_folder
from course_lib.assignments.sandbox import Limits, require_sandbox
from course_lib.assignments.source import load_set

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "00_introduction.ipynb"
EXERCISE = ROOT / "exercises" / "00_introduction.ipynb"
ANSWERS = {
    "wrong_kl": (
        "answer_categorical_kl",
        "def categorical_kl(p, q):\n    return np.sum(p * np.log(q), axis=-1)\n",
    ),
    "exception": (
        "answer_bits_per_dim",
        "def bits_per_dim(images, probs):\n    return images.mean() / 0 + {}[1]\n",
    ),
    "nan": (
        "answer_cross_entropy",
        "def cross_entropy(p, q):\n    return np.full(np.shape(p)[:-1], np.nan)\n",
    ),
}


def make_submissions(folder: Path, n: int) -> None:
    kinds = ["correct", "untouched", "wrong_kl", "exception", "nan"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "untouched":
            text = EXERCISE.read_text()
        else:
            nb = json.loads(SOLUTION.read_text())
            if kind in ANSWERS:
                grade_id, code = ANSWERS[kind]
                for cell in nb["cells"]:
                    if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
                        cell["source"] = code
            text = json.dumps(nb)
        (folder / f"student_{i:03d}_{kind}.ipynb").write_text(text)


def _cgroup_available(limits: Limits) -> bool:
    """Whether jobs get a cgroup here (memory, processes and CPU limited for the whole sandbox)."""
    group = JobCgroup.create(limits)
    if group:
        group.close()
    return group is not None


def median(records, key):
    values = [r["timings"][key] for r in records if r["timings"].get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of submissions")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="worker pool size (default: cores)"
    )
    args = parser.parse_args(argv)
    require_sandbox()
    exercise_set, limits = load_set(SOLUTION, seed=2026), Limits()
    runs = {}
    for sandbox in (True, False):
        _REFERENCE_CACHE.clear()  # each mode pays for its own reference run
        with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
            subs, out = Path(tmp) / "subs", Path(tmp) / "results"
            subs.mkdir()
            make_submissions(subs, args.n)
            t0 = time.perf_counter()
            reference_outputs(exercise_set, limits, sandbox)
            reference_s = time.perf_counter() - t0
            records = grade_folder(
                exercise_set,
                subs,
                out,
                workers=args.workers,
                limits=limits,
                sandbox=sandbox,
                log=lambda *a: None,
            )
            runs[sandbox] = (time.perf_counter() - t0, reference_s, records)
    wall, reference_s, records = runs[True]
    statuses = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    result = {
        "benchmark": "grading",
        "set": exercise_set.name,
        "n": args.n,
        "workers": args.workers,
        "wall_s": round(wall, 2),
        "unsandboxed_wall_s": round(runs[False][0], 2),
        "sandbox_overhead_ratio": round(wall / runs[False][0], 2),
        "reference_run_s": round(reference_s, 3),
        "submissions_per_s": round(args.n / wall, 2),
        "target": "100 submissions in < 60 s on 2 cores, sandboxed",
        "sandbox": {
            "bwrap": subprocess.run(
                ["bwrap", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "cgroup_per_job": _cgroup_available(limits),
            "same_records_unsandboxed": [r["total"] for r in records] == [r["total"] for r in runs[False][2]],
        },
        "per_submission_median_s": {
            k: median(records, k) for k in ("start_s", "child_s", "rebuild_s", "compare_s", "write_s")
        },
        "statuses": statuses,
        "mean_total": round(statistics.mean(r["total"] for r in records), 3),
        "limits": vars(limits),
        "machine": host_info(),
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m benchmarks.grading --n {args.n}",
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"grading_n{args.n}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return path


if __name__ == "__main__":
    main()
