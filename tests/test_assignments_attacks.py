"""Issue 16: a hostile cohort. Every attack of the issue is a submission here, graded together
with ordinary students, with the static policy check switched OFF: the sandbox alone must hold.

One cohort of 20 is graded once (module fixture, ``@slow``); the benign students are also graded
without the attackers, and their records must be identical. Each attack reports what it could
see on its stdout (``FINDINGS {...}``, kept in the record's ``log_tail``) so a test can check it
saw nothing. Safety: every write an attack would make is confined to ``BOUNDARY`` (this module's
temporary folder, which also holds the grader's scratch files), processes an attack starts carry
a unique marker and are killed by the test if they survive, and no attack signals or changes
anything it did not create, so even a broken sandbox cannot touch the machine outside the test.
"""

import csv
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from course_lib.assignments import grading
from course_lib.assignments.results import grade_folder
from course_lib.assignments.sandbox import Limits, bwrap_problem
from course_lib.assignments.source import load_set

pytestmark = [
    pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem())),
    pytest.mark.slow,
]
ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "00_introduction.ipynb"
EXERCISE = ROOT / "exercises" / "00_introduction.ipynb"
LIMITS = Limits(cell_timeout=6.0, timeout=15.0, memory_mb=1000)
MARKER = f"{time.time() % 1000:.6f}"  # `sleep 123.456789`: the processes the attacks start
SECRET = "hunter2-grader-secret"

# Shared by every attack: where it may write, and how it reports what it saw.
PRELUDE = """
import json, os, subprocess, sys
from pathlib import Path
BOUNDARY, MARKER = Path({boundary!r}), {marker!r}
SOLUTION, SUBS, RESULTS, RUNNER, CHECKS = {solution!r}, {subs!r}, {results!r}, {runner!r}, {checks!r}
def inside(p):
    try:
        return Path(p).resolve().is_relative_to(BOUNDARY)
    except OSError:
        return False
def report(**found):
    print("FINDINGS " + json.dumps(found), flush=True)
"""

ATTACKS = {
    # read the solutions, classmates' notebooks, the results folder and the grader's /proc and environment
    "snoop": """
grader = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        continue
    if b"pytest" in text or b"hunter2" in text:
        grader.append(pid)
report(
    solutions=Path(SOLUTION).exists(),
    classmates=Path(SUBS).exists(),
    results=Path(RESULTS).exists(),
    grader_processes=grader,
    secret="hunter2" in json.dumps(dict(os.environ)),
    visible_root=sorted(os.listdir("/")),
)
raise RuntimeError("leak: " + json.dumps(dict(os.environ)) + " " + " ".join(os.listdir(".")))
""",
    # plant folders named like classmates' outputs wherever jobs are visible, and overwrite their notebooks
    "planter": """
planted, rewritten = [], []
for folder in [Path("/tmp"), Path.cwd(), BOUNDARY]:
    for dirpath, dirnames, filenames in os.walk(folder):
        if not inside(dirpath):
            continue
        for name in ["out_0.npz", "status.json", "job.json", "correct.json", "alice.json"]:
            try:
                (Path(dirpath) / name).mkdir()
                planted.append(dirpath)
            except OSError:
                pass
        for name in filenames:
            if name.endswith(".ipynb") and inside(Path(dirpath) / name):
                (Path(dirpath) / name).write_text("{}")
                rewritten.append(name)
report(planted=[p for p in planted if inside(p)], rewritten=rewritten)
""",
    # forge signed-looking records with the right hashes for everyone, and look for the grader to kill
    "forger": """
import hashlib
forged = []
for dirpath, dirnames, filenames in os.walk(BOUNDARY):
    for name in filenames:
        if name.endswith(".json") and inside(Path(dirpath) / name):
            record = json.loads((Path(dirpath) / name).read_text())
            record.update(total=10, status="ok")
            (Path(dirpath) / name).write_text(json.dumps(record))
            forged.append(name)
parent = Path(f"/proc/{os.getppid()}/cmdline")
report(forged=forged, parent_is_grader=parent.exists() and b"pytest" in parent.read_bytes())
""",
    # the grader's own code: is it writable? (opened for appending, nothing written)
    "code_writer": """
writable = []
for path in [RUNNER, CHECKS, sys.executable]:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        writable.append(path)
    except OSError:
        pass
report(writable=writable)
""",
    # a setsid daemon that would rewrite grades.csv after the grader exits
    "daemon": """
script = (f"for i in $(seq 150); do sleep {MARKER}0 & sleep 0.2; "
          f"[ -f {BOUNDARY}/results/grades.csv ] && echo hacked > {BOUNDARY}/results/grades.csv; done")
subprocess.Popen(["setsid", "sh", "-c", script], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
report(started=True)
""",
    # 40 setsid CPU spinners, kept alive until this submission's timeout
    "spinner": """
for _ in range(40):
    subprocess.Popen(["setsid", "sh", "-c", f": {MARKER}; while :; do :; done"], start_new_session=True)
import time
while True:
    time.sleep(1)
""",
    # 3 forks holding 400 MB each: under the per-process limit, over the sandbox's 1,000 MB
    "memory_forks": """
import time
hogs = [subprocess.Popen([sys.executable, "-c", f"x = bytes([1]) * (400 * 2**20); import time; time.sleep(30)  # {MARKER}"])
        for _ in range(3)]
start = time.time()
while time.time() - start < 5.5 and all(h.poll() is None for h in hogs):
    time.sleep(0.05)
report(exit_codes=[h.poll() for h in hogs])
""",
    # a bounded fork bomb: 300 processes that each sleep
    "forker": """
started = 0
try:
    for _ in range(300):
        subprocess.Popen(["sleep", f"{MARKER}1"])
        started += 1
except OSError:
    pass
report(started=started)
""",
    # fill the disk: 200 MB into /tmp and the working folder
    "disk_filler": """
written = 0
for folder in ["/tmp", "."]:
    try:
        with Path(folder, "fill").open("wb") as f:
            for _ in range(100):
                written += f.write(b"x" * 2**20)
    except OSError as exc:
        pass
report(written_mb=written >> 20)
""",
    # flood the report channel with a frame of 200,000 arrays
    "flooder": """
import struct
fd = int(sys.argv[3])  # the runner's report channel
header = json.dumps({"type": "call", "index": 0, "status": "ok",
                     "arrays": [{"key": f"c0_{i}", "dtype": "<f8", "shape": [0]} for i in range(200_000)]})
body = header.encode() + b"\\n"
try:
    os.write(fd, b"MSG1" + struct.pack("<I", len(body)) + body)
except OSError:
    pass
report(flooded=True)
""",
    # the network
    "networker": """
import socket
reached = []
for host in [("1.1.1.1", 53), ("151.101.0.223", 443)]:
    s = socket.socket()
    s.settimeout(1)
    try:
        if s.connect_ex(host) == 0:
            reached.append(host[0])
    except OSError:
        pass
    s.close()
report(reached=reached)
""",
}
KL = (
    "def categorical_kl(p, q):\n    p, q = np.asarray(p, float), np.asarray(q, float)\n"
    "    with np.errstate(divide='ignore', invalid='ignore'):\n"
    "        return np.where(p > 0, p * np.log(p / q), 0.0).sum(-1)\n"
)
WRONG_KL = "def categorical_kl(p, q):\n    return np.zeros(np.shape(p)[:-1])\n"
# file name as given -> (notebook kind, expected total): graded with and without the attackers
BENIGN = {
    "correct.ipynb": ("solution", 10),
    "wrong.ipynb": ("wrong_kl", 7),
    "untouched.ipynb": ("exercise", 0),
    "alice.ipynb": ("solution", 10),
    "Alice": ("exercise", 0),  # a folder, as platforms export
    "alice_2.ipynb": ("wrong_kl", 7),
    ".dotty.ipynb": ("solution", 10),
    "Zoë Müller.ipynb": ("wrong_kl", 7),
    "x" * 230 + ".ipynb": ("solution", 10),
}


def notebook(kind: str, extra: str = "") -> str:
    if kind == "exercise":
        return EXERCISE.read_text()
    nb = json.loads(SOLUTION.read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "answer_categorical_kl":
            cell["source"] = (WRONG_KL if kind == "wrong_kl" else KL) + extra
    return json.dumps(nb)


def write(folder: Path, students: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for given, text in students.items():
        path = folder / given / "00_introduction.ipynb" if not given.endswith(".ipynb") else folder / given
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def findings(record: dict) -> dict:
    lines = [line for line in record.get("log_tail", "").splitlines() if line.startswith("FINDINGS ")]
    assert lines, f"{record['submission']}: the attack did not run: {record.get('log_tail', '')[-500:]}"
    return json.loads(lines[-1][len("FINDINGS ") :])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """(records by file as given, records of the benign students graded alone, results folder, seconds)."""
    base = tmp_path_factory.mktemp("cohort")
    mp = pytest.MonkeyPatch()
    mp.setattr(tempfile, "tempdir", str(base / "scratch"))  # the grader's private files live in BOUNDARY
    mp.setattr(grading, "check_policy", lambda *args: {})  # the static check is off: only the sandbox holds
    mp.setenv("GRADER_SECRET", SECRET)
    (base / "scratch").mkdir()
    try:
        exercise_set = load_set(SOLUTION, seed=1234)
        alone = grade_folder(
            exercise_set,
            _write_benign(base / "alone"),
            base / "alone_results",
            workers=2,
            limits=LIMITS,
            log=lambda *a: None,
        )
        subs, results = _write_benign(base / "subs"), base / "results"
        fields = {
            "boundary": str(base),
            "marker": MARKER,
            "solution": str(SOLUTION),
            "subs": str(subs),
            "results": str(results),
            "runner": str(ROOT / "course_lib/assignments/runner.py"),
            "checks": str(ROOT / "course_lib/assignments/checks.py"),
        }
        write(
            subs,
            {
                f"{name}.ipynb": notebook("solution", PRELUDE.format(**fields) + code)
                for name, code in ATTACKS.items()
            },
        )
        t0 = time.perf_counter()
        records = grade_folder(exercise_set, subs, results, workers=2, limits=LIMITS, log=lambda *a: None)
        seconds = time.perf_counter() - t0
        time.sleep(0.5)  # the daemon would strike now
        yield {r["submission"]: r for r in records}, {r["submission"]: r for r in alone}, results, seconds
    finally:
        mp.undo()
        for pid in processes_with(MARKER):  # only if a sandbox leaked: leave nothing running
            os.kill(pid, signal.SIGKILL)


def _write_benign(folder: Path) -> Path:
    write(folder, {given: notebook(kind) for given, (kind, _) in BENIGN.items()})
    return folder


def test_every_other_student_is_graded_exactly_as_alone(cohort):
    records, alone, _, _ = cohort
    assert len(records) == 20
    for given, record in alone.items():
        mixed = records[given]
        assert (mixed["total"], mixed["status"]) == (record["total"], record["status"]), given
        assert {t: v["points"] for t, v in mixed["tasks"].items()} == {
            t: v["points"] for t, v in record["tasks"].items()
        }
    expected = {
        g + ("/00_introduction.ipynb" if not g.endswith(".ipynb") else ""): t for g, (_, t) in BENIGN.items()
    }
    assert {g: alone[g]["total"] for g in expected} == expected


def test_one_row_per_submission_naming_its_file(cohort):
    records, _, results, _ = cohort
    rows = list(csv.DictReader((results / "grades.csv").open(encoding="utf-8")))
    assert sorted(r["submission"] for r in rows) == sorted(records)
    assert len({r["id"] for r in rows}) == 20
    by_file = {r["submission"]: r for r in rows}
    assert by_file["alice_2.ipynb"]["total"] == "7" and by_file["alice.ipynb"]["total"] == "10"
    assert by_file["Alice/00_introduction.ipynb"]["total"] == "0"
    assert by_file["Zoë Müller.ipynb"]["student"] == "Zoë Müller"
    assert by_file[".dotty.ipynb"]["total"] == "10"  # dot-files are graded, not dropped
    long = by_file["x" * 230 + ".ipynb"]
    assert long["total"] == "10" and len(long["id"]) < 60  # a short file name for the results
    ids = {r["submission"]: r["id"] for r in rows}
    assert ids["correct.ipynb"] == "correct" and ids["alice_2.ipynb"] == "alice_2"
    assert ids["alice.ipynb"].startswith("alice~") and ids["Alice/00_introduction.ipynb"].startswith("Alice~")


def test_the_attacks_saw_and_changed_nothing(cohort):
    records, _, results, _ = cohort
    snoop = findings(records["snoop.ipynb"])
    assert not (snoop["solutions"] or snoop["classmates"] or snoop["results"] or snoop["secret"])
    assert snoop["grader_processes"] == []
    assert findings(records["planter.ipynb"]) == {"planted": [], "rewritten": []}
    assert findings(records["forger.ipynb"]) == {"forged": [], "parent_is_grader": False}
    assert findings(records["code_writer.ipynb"]) == {"writable": []}
    assert findings(records["networker.ipynb"]) == {"reached": []}
    assert findings(records["disk_filler.ipynb"])["written_mb"] <= 2 * LIMITS.fsize_mb
    assert findings(records["forker.ipynb"])["started"] < LIMITS.nproc
    for record in records.values():  # every file on disk is the grader's own record
        assert json.loads((results / f"{record['id']}.json").read_text()) == record
    text = " ".join(p.read_text(encoding="utf-8") for p in results.iterdir() if p.is_file())
    assert SECRET not in text and "hunter2" not in text


def test_daemons_spinners_and_memory_hogs_end_with_their_sandbox(cohort):
    records, _, results, seconds = cohort
    assert processes_with(MARKER) == []
    assert "hacked" not in (results / "grades.csv").read_text()
    assert records["spinner.ipynb"]["status"] == "timeout"
    assert -signal.SIGKILL in findings(records["memory_forks.ipynb"])["exit_codes"]  # 1.2 GB > 1 GB
    assert "the sandbox ran out of memory" in records["memory_forks.ipynb"]["notes"]
    assert records["flooder.ipynb"]["total"] == 10  # its own answers still count; the flood is ignored
    assert seconds < 60, f"the hostile cohort took {seconds:.0f} s"
