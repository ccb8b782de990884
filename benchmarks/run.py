"""Run one benchmark suite and write a JSON record under ``benchmarks/results/``.

    python -m benchmarks.run --suite fit            # full budget
    python -m benchmarks.run --suite fit --fast     # seconds (CI); also COURSE_FAST=1

A suite is a function ``suite(args, record) -> dict`` registered in ``SUITES``; it returns its
fields (model, dataset, steps, wall time, steps/s, samples/s, bpd or FID/KID, ...) and ``run``
adds what every record has: the machine, ``device_summary()``, the git commit, the date and the
command. A later lecture adds its suite with ``SUITES["ddpm"] = "benchmarks.suite_ddpm:run"``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from course_lib.runtime import device_summary, get_device, has_fast_bf16, is_fast

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# suite name -> "module:function"; imported only when the suite runs.
SUITES: dict[str, str] = {
    "fit": "benchmarks.suite_fit:run",
    "ddpm": "benchmarks.suite_ddpm:run",
    "fit_overhead": "benchmarks.suite_fit_overhead:run",
    "gan": "benchmarks.suite_gan:run",
    "vae": "benchmarks.suite_vae:run",
    "flow": "benchmarks.suite_flow:run",
    "pixelcnn": "benchmarks.suite_pixelcnn:run",
    "ddim": "benchmarks.suite_ddim:run",
    "flow_matching": "benchmarks.suite_flow_matching:run",
    "amp": "benchmarks.suite_amp:run",
}

DATASETS = ("mnist", "fashion_mnist")
AMP_SUITES = ("ddim", "gan", "pixelcnn")  # the suites whose training takes --amp


def env_ints(name: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers from the environment variable ``name``, e.g. "32,64,96"."""
    try:
        return tuple(int(v) for v in os.environ[name].split(","))
    except ValueError:
        raise SystemExit(f"{name}={os.environ[name]!r} is not a comma-separated list of whole numbers; "
                         f"write it like {name}=1,2,4") from None


def write_new(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, or to ``<stem>_2.json``, ``_3``, ... if taken: two runs started in the same
    second (side-by-side trials) must not overwrite each other's record. Exclusive creation, so no race."""
    for k in range(1, 1000):
        candidate = path if k == 1 else path.with_name(f"{path.stem}_{k}{path.suffix}")
        try:
            with open(candidate, "x") as f:
                f.write(text)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{path} and 998 numbered variants exist; clean up {path.parent}")


def load_recorder():
    """A ``fit`` callback keeping (seconds, 1-minute load average) every 30 s: how busy the machine was."""
    t0, loads = time.perf_counter(), []

    def callback(result) -> None:
        elapsed = time.perf_counter() - t0
        if len(loads) <= elapsed // 30:
            loads.append((round(elapsed), os.getloadavg()[0]))

    callback.loads = loads
    return callback


def git_commit() -> str | None:
    """The checked-out commit (with ``+dirty`` if tracked files changed), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return {"hardware": f"{_cpu_name()} CPU, {os.cpu_count()} cores{gpu}", "cpu": _cpu_name(), "host_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--suite", required=True, choices=sorted(SUITES))
    p.add_argument("--fast", action="store_true", help="tiny budget (also implied by COURSE_FAST=1)")
    p.add_argument("--dataset", default="mnist", choices=DATASETS)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="override the suite's number of steps (per run)")
    p.add_argument("--rounds", type=int, default=None, help="override the suite's number of repeated runs")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", action="store_true",
                   help=f"bf16 autocast in training (fit(amp=True)): an Ampere-or-later CUDA GPU or a CPU with bf16 "
                        f"instructions; suites {', '.join(AMP_SUITES)}")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    args.fast = args.fast or is_fast()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = get_device(args.device)
    if args.amp and args.suite not in AMP_SUITES:
        raise SystemExit(f"--amp is read by the suites {', '.join(AMP_SUITES)}, not by {args.suite!r}; drop --amp")
    if args.amp and not has_fast_bf16(args.device):
        raise SystemExit(f"--amp needs a CUDA GPU with bf16 (Ampere or later) or a CPU with bf16 instructions "
                         f"(AVX512-BF16 or AMX); {device_summary(args.device)} has neither: drop --amp")
    module_name, func_name = SUITES[args.suite].split(":")
    suite = getattr(importlib.import_module(module_name), func_name)
    date = datetime.datetime.now(datetime.timezone.utc)
    commit = git_commit()  # the code that runs: read before the suite, which may run for hours
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    fields = suite(args)
    record = {
        "suite": args.suite, "fast": args.fast, "amp": args.amp, **fields,
        "device": str(args.device), "device_summary": device_summary(args.device), **host_info(),
        "git_commit": commit, "date": date.isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "total_wall_time_s": time.perf_counter() - t0,
        # 1-minute load average before/after: other processes on the machine slow every timing
        "load_average_1min": [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tag = "fast" if args.fast else "full"
    path = write_new(args.out_dir / f"{args.suite}_{args.dataset}_{args.device.type}_{tag}_{date:%Y%m%dT%H%M%S}.json",
                     json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
