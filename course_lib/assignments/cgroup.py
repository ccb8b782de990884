"""Per-job limits of a whole sandbox with a Linux cgroup: memory, process count and CPU share.

``JobCgroup.create(limits)`` makes one cgroup per job, below the grader's own, with

* memory: ``limits.memory_mb`` for every process of the job together, tmpfs files included
  (cgroup v1 ``memory.limit_in_bytes``, v2 ``memory.max`` with no swap);
* processes: ``limits.nproc`` tasks (processes and threads) at most (``pids.max``);
* CPU: ``limits.cpus`` cores at most (CFS quota), so that spinners in one sandbox cannot starve the
  other students graded at the same time.

The sandbox joins it before it starts (``join_command`` prefixes the command with a small shell
that writes its own pid into the cgroup, then ``exec``s); ``close`` kills whatever is left and
removes the cgroup. It needs write access to the cgroup tree (root, or a delegated cgroup v2
subtree); where there is none, ``create`` returns None and the runner's per-process limits apply.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu")


def _own_path(controller: str) -> str | None:
    """This process's cgroup path for a v1 controller, or for v2 (controller "")."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "") or controller in names.split(","):
            return path
    return None


class JobCgroup:
    JOIN_FAILED = 97  # exit status of the command when the shell could not join the cgroup

    def __init__(self, dirs: list[Path], version: int):
        self.dirs, self.version = dirs, version

    @classmethod
    def create(cls, limits) -> JobCgroup | None:
        """A fresh cgroup with ``limits`` applied, or None where cgroups cannot be used."""
        name = f"course-grade-{uuid.uuid4().hex[:12]}"
        for make in (cls._create_v2, cls._create_v1):
            try:
                group = make(name, limits)
            except OSError:
                group = None
            if group is not None:
                return group
        return None

    @classmethod
    def _create_v2(cls, name: str, limits) -> JobCgroup | None:
        own = _own_path("")
        if own is None or not (ROOT / "cgroup.controllers").exists():
            return None
        parent = ROOT / own.lstrip("/")
        wanted = {"memory", "pids", "cpu"}
        if not wanted <= set((parent / "cgroup.subtree_control").read_text().split()):
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
        group = cls([parent / name], 2)
        group.dirs[0].mkdir()
        try:
            group._write("memory.max", str(limits.memory_mb << 20))
            group._write("memory.swap.max", "0", required=False)
            group._write("pids.max", str(limits.nproc))
            group._write("cpu.max", f"{int(limits.cpus * 100_000)} 100000")
        except OSError:
            group.close()
            raise
        return group

    @classmethod
    def _create_v1(cls, name: str, limits) -> JobCgroup | None:
        paths = {c: _own_path(c) for c in V1_CONTROLLERS}
        if None in paths.values() or not all((ROOT / c).is_dir() for c in V1_CONTROLLERS):
            return None
        group = cls([ROOT / c / p.lstrip("/") / name for c, p in paths.items()], 1)
        try:
            for folder in group.dirs:
                folder.mkdir()
            group._write("memory.limit_in_bytes", str(limits.memory_mb << 20))
            group._write("memory.memsw.limit_in_bytes", str(limits.memory_mb << 20), required=False)
            group._write("pids.max", str(limits.nproc))
            group._write("cpu.cfs_period_us", "100000")
            group._write("cpu.cfs_quota_us", str(int(limits.cpus * 100_000)))
        except OSError:
            group.close()
            raise
        return group

    def _write(self, name: str, value: str, required: bool = True) -> None:
        for folder in self.dirs:
            if (folder / name).exists():
                (folder / name).write_text(value)
                return
        if required:
            raise OSError(f"no {name} in {self.dirs}")

    def join_command(self, command: list[str]) -> list[str]:
        """``command`` started by a shell that first moves itself into this cgroup (else exits JOIN_FAILED)."""
        script = f'while [ "$1" != -- ]; do echo $$ > "$1" || exit {self.JOIN_FAILED}; shift; done; shift; exec "$@"'
        return ["/bin/sh", "-c", script, "sh", *[str(d / "cgroup.procs") for d in self.dirs], "--", *command]

    def out_of_memory(self) -> bool:
        """True when the kernel killed a process of the job for lack of memory in its cgroup."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for folder in self.dirs:
            try:
                fields = dict(line.split()[:2] for line in (folder / name).read_text().splitlines())
                return int(fields.get("oom_kill", 0)) > 0
            except (OSError, ValueError):
                continue
        return False

    def close(self) -> None:
        """Kill every process left in the cgroup and remove it."""
        for _ in range(100):
            pids = set()
            for folder in self.dirs:
                try:
                    pids |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
                except (OSError, ValueError):
                    pass
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        for folder in self.dirs:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
