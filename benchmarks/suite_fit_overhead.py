"""Suite ``fit_overhead``: what ``fit`` costs per step outside the model, before and after the training contract.

``fit``'s own work per step (EMA, gradient clipping, logging, batching, the contract's hooks) is
measured on a probe that has exactly the parameters and buffers of the notebook-06 DDPM (the
0.27M-parameter U-Net and its schedule) but a negligible loss (the sum of every parameter), so
that the model's forward and backward do not drown the overhead in noise:

    overhead per step = (time of fit - its set-up time - time of a bare loop doing the same forward,
                         backward and Adam step) / steps

(the set-up, a one-off cost such as the EMA copy, is timed as a run of ``fit`` with steps=0).

"before" is ``course_lib/train.py`` as it was at ``BASELINE_COMMIT`` (read with ``git show``, so
the old code is not kept in the tree), "after" is the current one; both train the same probe with
EMA (0.999), clipping (1.0) and logging every 10 steps. The variants take turns in many short runs
and each figure is the median, so load from other processes hits all of them alike. For scale,
the record also gives steps/s of both versions on the real DDPM (batch 64), where a CPU step takes
about 130 ms and the overhead is within the noise.
"""
from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

BASELINE_COMMIT = "104e897"  # the last commit before the training contract (issue 14)


def _fit_before():
    """``fit`` of ``BASELINE_COMMIT``, loaded from git into a module of its own."""
    root = Path(__file__).resolve().parent.parent
    shown = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:course_lib/train.py"], cwd=root,
                           capture_output=True, text=True)
    if shown.returncode != 0:
        raise RuntimeError(f"the baseline fit (commit {BASELINE_COMMIT}) is not in this checkout's git history "
                           f"({shown.stderr.strip()}); run the suite in a full clone (git fetch --unshallow)")
    source = shown.stdout
    module = types.ModuleType("course_lib_train_before")
    sys.modules[module.__name__] = module  # dataclasses look the module up while building FitResult
    exec(compile(source, f"{BASELINE_COMMIT}:course_lib/train.py", "exec"), module.__dict__)
    return module.fit


class OverheadProbe(nn.Module):
    """The notebook-06 DDPM's parameters and buffers with a loss that costs almost nothing."""

    def __init__(self):
        super().__init__()
        from course_lib.diffusion import build_ddpm

        self.ddpm = build_ddpm((1, 28, 28))

    def loss(self, x, y=None):
        return {"loss": torch.stack([p.sum() for p in self.ddpm.parameters()]).sum() + 0 * x.mean()}


def run(args) -> dict:
    from course_lib.data import load_dataset, to_signed
    from course_lib.diffusion import build_ddpm
    from course_lib.train import fit as fit_after

    from course_lib.data import batches

    from benchmarks.suite_fit import _bare_loop, _sync

    device, fit_before = args.device, _fit_before()
    x = to_signed(load_dataset(args.dataset, "train").x[:2048]).to(device)
    steps, rounds = args.steps or (20 if args.fast else 200), args.rounds or (1 if args.fast else 9)
    settings = dict(batch_size=64, lr=2e-4, ema_decay=0.999, grad_clip=1.0, log_every=10, device=device,
                    progress=False, seed=args.seed)

    def timed_fit(fit, model_cls, n):
        torch.manual_seed(args.seed)
        model = model_cls().to(device)
        t0 = time.perf_counter()
        fit(model, x, steps=n, **settings)
        _sync(device)
        return time.perf_counter() - t0

    def timed_bare(n):  # the same forward, backward and Adam step without fit
        torch.manual_seed(args.seed)
        return _bare_loop(OverheadProbe().to(device), lambda: batches(x, settings["batch_size"], drop_last=True), n,
                          settings["lr"], device)

    probe = {"before": lambda n: timed_fit(fit_before, OverheadProbe, n),
             "after": lambda n: timed_fit(fit_after, OverheadProbe, n), "bare": timed_bare,
             "before_setup": lambda n: timed_fit(fit_before, OverheadProbe, 0),
             "after_setup": lambda n: timed_fit(fit_after, OverheadProbe, 0)}
    for measure in probe.values():  # warm-up: first-call costs land on no measured run
        measure(1 if args.fast else 3)
    times = {name: [] for name in probe}
    for _ in range(rounds):
        for name, measure in probe.items():
            times[name].append(measure(steps))
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    overhead_ms = {v: 1000 * (median[v] - median[f"{v}_setup"] - median["bare"]) / steps for v in ("before", "after")}

    ddpm_steps, ddpm_rounds = (0, 0) if args.fast else (15, 3)  # fast mode (tests): no DDPM runs
    ddpm = {"before": lambda: timed_fit(fit_before, lambda: build_ddpm((1, 28, 28)), ddpm_steps),
            "after": lambda: timed_fit(fit_after, lambda: build_ddpm((1, 28, 28)), ddpm_steps)}
    ddpm_times = {name: [] for name in ddpm}
    for _ in range(ddpm_rounds):
        for name, measure in ddpm.items():
            ddpm_times[name].append(measure())
    return {
        "model": "notebook-06 DDPM U-Net (0.27M parameters) as an overhead probe (loss = sum of parameters)",
        "dataset": args.dataset, "n_train": int(x.shape[0]), "batch_size": settings["batch_size"],
        "steps": steps, "rounds": rounds, "baseline_commit": BASELINE_COMMIT,
        "timing": f"median wall time of {rounds} interleaved runs of {steps} steps per variant",
        "overhead_ms_per_step": overhead_ms,
        "overhead_ratio_before_over_after": overhead_ms["before"] / max(overhead_ms["after"], 1e-9),
        "probe_wall_time_s": median, "probe_wall_time_s_all_runs": times,
        "ddpm_steps_per_s": {name: ddpm_steps / sorted(t)[len(t) // 2] for name, t in ddpm_times.items() if t},
        "bpd": None, "fid": None, "kid": None,  # a speed-only suite
    }
