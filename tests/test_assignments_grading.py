"""The autograder on set 00 against the bad inputs of issue 3, all graded together in one run.

Every student variant is generated from the solution notebook; each must end in the right
points, status and reason, and none may disturb another student's result.
"""

import copy
import csv
import dataclasses
import json
import tempfile
import zipfile
from pathlib import Path

import pytest

from course_lib.__main__ import main as course_main
from course_lib.assignments.results import grade_folder
from course_lib.assignments.sandbox import Limits, bwrap_problem
from course_lib.assignments.source import load_set

pytestmark = pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))
ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "00_introduction.ipynb"
EXERCISE = ROOT / "exercises" / "00_introduction.ipynb"
LIMITS = Limits(cell_timeout=2.0, timeout=10.0, memory_mb=1500)
CORRECT_KL = (
    "def categorical_kl(p, q):\n    p, q = np.asarray(p, float), np.asarray(q, float)\n"
    "    with np.errstate(divide='ignore', invalid='ignore'):\n"
    "        return np.where(p > 0, p * np.log(p / q), 0.0).sum(-1)\n"
)
WRONG_KL = "def categorical_kl(p, q):\n    return np.zeros(np.shape(p)[:-1])\n"


def solution_nb():
    return json.loads(SOLUTION.read_text())


def gid(cell):
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


def with_answer(answer_id, code, nb=None):
    nb = nb or solution_nb()
    for cell in nb["cells"]:
        if gid(cell) == answer_id:
            cell["source"] = code
    return nb


def cell_of(nb, answer_id):
    return next(c for c in nb["cells"] if gid(c) == answer_id)


def source_of(nb, answer_id):
    source = cell_of(nb, answer_id)["source"]
    return "".join(source) if isinstance(source, list) else source


def variants_a():
    """student -> notebook dict or raw text; graded with the real set 00."""
    v = {"correct": solution_nb(), "untouched": EXERCISE.read_text()}
    v["syntax_error"] = with_answer("answer_categorical_kl", "def categorical_kl(p, q:\n    return 0\n")
    v["exception_one"] = with_answer(
        "answer_bits_per_dim", "def bits_per_dim(images, probs):\n    raise ValueError('boom')\n"
    )
    v["infinite_loop"] = with_answer(
        "answer_categorical_mle", "def categorical_mle(counts):\n    while True:\n        pass\n"
    )
    v["memory_bomb"] = with_answer(
        "answer_cross_entropy",
        "def cross_entropy(p, q):\n    blocks = []\n"
        "    while True:\n        blocks.append(np.empty(10**8))\n",
    )
    v["nan"] = with_answer(
        "answer_categorical_kl", "def categorical_kl(p, q):\n    return np.full(np.shape(p)[:-1], np.nan)\n"
    )
    v["wrong_shape"] = with_answer(
        "answer_categorical_mle",
        "def categorical_mle(counts):\n"
        "    counts = np.asarray(counts, float)\n"
        "    return (counts / counts.sum(-1, keepdims=True))[..., None]\n",
    )
    nb = solution_nb()
    nb["cells"] = nb["cells"][::-1]
    v["reordered"] = nb
    nb = solution_nb()
    kl = cell_of(nb, "answer_categorical_kl")
    wrong = copy.deepcopy(kl)
    wrong["source"] = WRONG_KL
    nb["cells"].insert(nb["cells"].index(kl), wrong)  # wrong first, correct last: the last one counts
    v["duplicated_last_good"] = nb
    nb = solution_nb()
    kl = cell_of(nb, "answer_categorical_kl")
    nb["cells"].insert(nb["cells"].index(kl) + 1, wrong)
    v["duplicated_last_bad"] = nb
    nb = solution_nb()
    nb["cells"].remove(cell_of(nb, "answer_bits_per_dim"))
    v["missing_answer"] = nb
    nb = solution_nb()
    nb["cells"] = [c for c in nb["cells"] if not c["metadata"].get("nbgrader", {}).get("grade")]
    v["deleted_tests"] = nb
    nb = with_answer("answer_categorical_kl", WRONG_KL)
    cell_of(nb, "categorical_kl")["source"] = "print('categorical_kl: visible checks passed')"
    v["edited_tests"] = nb
    v["redefined_checks"] = with_answer(
        "answer_categorical_kl",
        WRONG_KL
        + (
            "np.allclose = lambda *args, **kwargs: True\nassert_close = lambda *args, **kwargs: None\n"
            "class AssertionError(Exception):\n    pass\n"
        ),
    )
    v["fake_print"] = with_answer(
        "answer_categorical_kl", WRONG_KL + "print('All tests passed! 10/10 points')\n"
    )
    v["policy_import"] = with_answer(
        "answer_categorical_mle", "import os\n" + source_of(solution_nb(), "answer_categorical_mle")
    )
    v["policy_reference"] = with_answer(
        "answer_categorical_kl",
        "from scipy.special import rel_entr\n\n"
        "def categorical_kl(p, q):\n    return rel_entr(p, q).sum(-1)\n",
    )
    v["bang_bypass"] = with_answer(  # issue 16: an unparseable first line hid the rest from the check
        "answer_categorical_kl",
        "!x\nimport os\nexec(open(os.environ.get('SOLUTION', 'solutions/00_introduction.ipynb')).read())\n",
    )
    v["cell_magic_time"] = with_answer(
        "answer_categorical_kl", "%%time\n" + source_of(solution_nb(), "answer_categorical_kl")
    )
    v["invalid_json"] = '{"cells": [ this is not json'
    v["not_a_notebook"] = '{"hello": "world"}'
    v["empty"] = ""
    return v


def write_variants(folder: Path, variants: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for student, nb in variants.items():
        (folder / f"{student}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    base = tmp_path_factory.mktemp("grade_a")
    write_variants(base / "subs", variants_a())
    records = grade_folder(
        load_set(SOLUTION), base / "subs", base / "results", workers=2, limits=LIMITS, log=lambda *a: None
    )
    return {r["student"]: r for r in records}, base / "results"


# student -> (total, status, {task: substring of its reason})
EXPECTED_A = {
    "correct": (10, "ok", {}),
    "untouched": (0, "error", {"categorical_kl": "not implemented yet"}),
    "syntax_error": (7, "error", {"categorical_kl": "SyntaxError"}),
    "exception_one": (7, "error", {"bits_per_dim": "ValueError: boom"}),
    "infinite_loop": (8, "timeout", {"categorical_mle": "timed out after 2 s"}),
    "memory_bomb": (8, "memory", {"cross_entropy": "MemoryError"}),
    "nan": (7, "ok", {"categorical_kl": "NaN"}),
    "wrong_shape": (8, "ok", {"categorical_mle": "shape"}),
    "reordered": (10, "ok", {}),
    "duplicated_last_good": (10, "ok", {}),
    "duplicated_last_bad": (7, "ok", {"categorical_kl": "wrong value"}),
    "missing_answer": (7, "error", {"bits_per_dim": "answer cell answer_bits_per_dim not found"}),
    "deleted_tests": (10, "ok", {}),
    "edited_tests": (7, "ok", {"categorical_kl": "wrong value"}),
    "redefined_checks": (7, "ok", {"categorical_kl": "wrong value"}),
    "fake_print": (7, "ok", {"categorical_kl": "wrong value"}),
    "policy_import": (0, "policy", {"bits_per_dim": "imports `os`"}),
    # cross_entropy forbids rel_entr too, and could call categorical_kl: both are flagged
    "policy_reference": (
        5,
        "policy",
        {"categorical_kl": "scipy.special.rel_entr", "cross_entropy": "rel_entr"},
    ),
    "bang_bypass": (0, "policy", {"categorical_kl": "imports `os`"}),
    "cell_magic_time": (10, "ok", {}),
    "invalid_json": (0, "invalid-notebook", {"categorical_kl": "not valid JSON"}),
    "not_a_notebook": (0, "invalid-notebook", {"categorical_kl": "not a Jupyter notebook"}),
    "empty": (0, "invalid-notebook", {"categorical_kl": "empty"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED_A))
def test_bad_inputs_end_in_the_right_grade_and_reason(run_a, student):
    records, _ = run_a
    total, status, reasons = EXPECTED_A[student]
    record = records[student]
    assert (record["total"], record["status"]) == (total, status), record["tasks"]
    for task, text in reasons.items():
        assert record["tasks"][task]["points"] == 0
        assert text in record["tasks"][task]["reason"], record["tasks"][task]


@pytest.mark.slow
def test_results_folder_holds_csv_json_and_feedback(run_a):
    records, out = run_a
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert set(rows) == set(EXPECTED_A)
    assert rows["correct"]["total"] == "10" and rows["correct"]["status"] == "ok"
    assert rows["exception_one"]["bits_per_dim"] == "0" and rows["exception_one"]["categorical_kl"] == "3"
    assert json.loads((out / "nan.json").read_text())["total"] == 7
    feedback = (out / "infinite_loop.feedback.md").read_text()
    assert "timed out after 2 s" in feedback and "**Total: 8 / 10 points**" in feedback
    assert "appears 2 times; the last one was graded" in " ".join(records["duplicated_last_good"]["notes"])


# A submission that hunts for the results folder by walking up from its working directory and
# searching for feedback files, then overwrites every JSON it finds. Its writes are confined to
# BOUNDARY (this test's tmp_path, which also holds the grader's temporary files) so that the test
# touches nothing outside it even if the sandbox failed; in the sandbox it finds nothing at all.
ATTACK = """
import os
from pathlib import Path
BOUNDARY = Path({boundary!r})
fake = '{{"student": "x", "total": 10, "max": 10, "status": "ok", "tasks": {{}}}}'
inside = lambda p: p.resolve().is_relative_to(BOUNDARY)
roots = [p for p in [Path.cwd(), *Path.cwd().parents] if inside(p)]
for dirpath, dirnames, filenames in os.walk(BOUNDARY):
    if any(f.endswith(".feedback.md") for f in filenames):
        roots.append(Path(dirpath))
for root in roots:
    for target in [root / "results", root / "out", root]:
        if not (target.is_dir() and inside(target)):
            continue
        for existing in target.glob("*.json"):
            existing.write_text(fake)
        (target / "grades.csv").write_text("student,total\\nattacker,10\\n")
        (target / "mallory.json").write_text(fake)
"""


@pytest.mark.slow
def test_process_exits_timeouts_and_results_folder_attack(tmp_path, monkeypatch):
    """os._exit/sys.exit mid-notebook, an uncatchable loop, and a submission writing into RESULTS."""
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))  # sandbox scratch dirs go here
    source = solution_nb()
    source["metadata"]["course"]["allowed_imports"] += ["os", "sys", "pathlib"]  # let the attacks run
    (tmp_path / "src").mkdir()
    src_path = tmp_path / "src" / "00_introduction.ipynb"
    src_path.write_text(json.dumps(source))
    exercise_set = load_set(src_path)
    subs, out = tmp_path / "subs", tmp_path / "results"
    write_variants(subs, {"correct": source})
    limits = dataclasses.replace(LIMITS, timeout=5.0)  # the uncatchable loop runs until this wall clock
    first = grade_folder(exercise_set, subs, out, workers=2, limits=limits, log=lambda *a: None)
    assert first[0]["total"] == 10
    kl = source_of(source, "answer_categorical_kl")
    write_variants(
        subs,
        {
            "os_exit": with_answer(
                "answer_categorical_kl", kl + "\nimport os\nos._exit(0)\n", copy.deepcopy(source)
            ),
            "sys_exit": with_answer(
                "answer_categorical_kl", kl + "\nimport sys\nsys.exit()\n", copy.deepcopy(source)
            ),
            "uncatchable_loop": with_answer(
                "answer_categorical_kl",
                kl + "\nwhile True:\n    try:\n        while True:\n"
                "            pass\n    except BaseException:\n        pass\n",
                copy.deepcopy(source),
            ),
            "attacker": with_answer(
                "answer_categorical_kl",
                WRONG_KL + ATTACK.format(boundary=str(tmp_path.resolve())),
                copy.deepcopy(source),
            ),
        },
    )
    logs = []
    records = {
        r["student"]: r
        for r in grade_folder(exercise_set, subs, out, workers=2, limits=limits, log=logs.append)
    }
    assert any("1 already graded, 4 to grade" in line for line in logs)  # rerun skips the graded student
    assert records["os_exit"]["total"] == 10 and "exit" in " ".join(records["os_exit"]["notes"])
    assert records["sys_exit"]["total"] == 10 and records["sys_exit"]["status"] == "error"
    assert records["uncatchable_loop"]["status"] == "timeout" and records["uncatchable_loop"]["total"] == 0
    assert "timed out after 5 s" in records["uncatchable_loop"]["tasks"]["categorical_kl"]["reason"]
    assert records["attacker"]["total"] == 7
    # the sandbox has no path to the results folder: nothing there changed
    assert not any("changed during grading" in line for line in logs), logs
    assert "mallory" not in (out / "grades.csv").read_text()
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert set(rows) == {"correct", "os_exit", "sys_exit", "uncatchable_loop", "attacker"}
    assert rows["attacker"]["total"] == "7" and rows["uncatchable_loop"]["total"] == "0"
    for student, record in records.items():  # every file on disk is the grader's own record
        assert json.loads((out / f"{student}.json").read_text()) == record


def test_zip_input_rerun_skip_and_force(tmp_path, capsys):
    nb = solution_nb()
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:  # one wrapper folder, one sub-folder per student
        z.writestr("export/alice/00_introduction.ipynb", json.dumps(nb))
        z.writestr("export/alice/scratch_copy.ipynb", EXERCISE.read_text())
        z.writestr("export/bob/my work.ipynb", EXERCISE.read_text())
        z.writestr("export/carol/notes.txt", "no notebook here")
    out = tmp_path / "results"
    args = [
        "grade",
        "00",
        str(archive),
        "--out",
        str(out),
        "--solutions",
        str(ROOT / "solutions"),
        "--workers",
        "2",
        "--timeout",
        "20",
        "--memory-mb",
        "1500",
    ]
    assert course_main(args) == 0
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert (rows["alice"]["total"], rows["bob"]["total"], rows["carol"]["status"]) == (
        "10",
        "0",
        "invalid-notebook",
    )
    assert (
        "no .ipynb file" in json.loads((out / "carol.json").read_text())["tasks"]["categorical_kl"]["reason"]
    )
    capsys.readouterr()
    assert course_main(args) == 0
    assert "3 already graded, 0 to grade" in capsys.readouterr().out
    assert course_main(args + ["--force"]) == 0
    assert "0 already graded, 3 to grade" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("../evil.ipynb", "{}", "unsafe path"),
        ("/abs/evil.ipynb", "{}", "unsafe path"),
    ],
)
def test_unsafe_zip_is_refused(tmp_path, name, data, message):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(name, data)
    with pytest.raises(SystemExit, match=message):
        grade_folder(load_set(SOLUTION), archive, tmp_path / "out", limits=LIMITS, log=lambda *a: None)
    assert not (tmp_path / "evil.ipynb").exists()


def test_zip_bomb_and_symlink_are_refused(tmp_path, monkeypatch):
    from course_lib.assignments import submissions

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/x.ipynb", "0" * 5_000_000)  # compresses to a few kB
    monkeypatch.setattr(submissions, "MAX_ZIP_BYTES", 1_000_000)
    with pytest.raises(SystemExit, match="zip bomb"):
        submissions.extract_zip(bomb, tmp_path / "x")
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as z:
        info = zipfile.ZipInfo("a/link.ipynb")
        info.external_attr = (0o120777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(SystemExit, match="symbolic link"):
        submissions.extract_zip(link, tmp_path / "y")


def test_forged_records_are_regraded(tmp_path, capsys):
    """Issue 16: records written by anyone but the grader (right hashes, no valid signature) are not reused."""
    subs, out = tmp_path / "subs", tmp_path / "results"
    write_variants(subs, {"correct": solution_nb(), "wrong": with_answer("answer_categorical_kl", WRONG_KL)})
    args = ["grade", "00", str(subs), "--out", str(out), "--solutions", str(ROOT / "solutions")]
    args += ["--workers", "2", "--timeout", "20", "--memory-mb", "1500", "--seed", "5"]
    assert course_main(args) == 0
    forged = json.loads((out / "wrong.json").read_text())
    forged.update(total=10.0, status="ok")
    for task in forged["tasks"].values():
        task.update(points=task["max"], result="pass")
    (out / "wrong.json").write_text(json.dumps(forged))  # same hashes and seed, the old signature
    capsys.readouterr()
    assert course_main(args) == 0
    assert "1 already graded, 1 to grade" in capsys.readouterr().out
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert (rows["wrong"]["total"], rows["correct"]["total"]) == ("7", "10")
    assert course_main(args[:-1] + ["6"]) == 0  # another seed: other inputs, everyone again
    assert "0 already graded, 2 to grade" in capsys.readouterr().out
    (out / ".grader" / "key").unlink()  # a new key: no old record verifies
    assert course_main(args[:-1] + ["6"]) == 0
    assert "0 already graded, 2 to grade" in capsys.readouterr().out
    assert oct((out / ".grader").stat().st_mode & 0o777) == "0o700"
