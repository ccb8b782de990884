"""Names, archives, the student release, and grading without bubblewrap (issue 16)."""

import json
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

from course_lib.__main__ import main as course_main
from course_lib.assignments.release import release
from course_lib.assignments.submissions import discover, extract_zip, open_submissions

ROOT = Path(__file__).resolve().parents[1]


def test_every_entry_gets_one_row_with_a_unique_stable_id(tmp_path):
    subs = tmp_path / "subs"
    (subs / "Alice").mkdir(parents=True)
    (subs / "Alice" / "00_introduction.ipynb").write_text("{}")
    for name in [
        "alice.ipynb",
        "alice_2.ipynb",
        ".dotty.ipynb",
        "Zoë.ipynb",
        "=HYPERLINK(1).ipynb",
        "y" * 240 + ".ipynb",
    ]:
        (subs / name).write_text("{}")
    (subs / "notes.txt").write_text("not a notebook")
    (subs / "link.ipynb").symlink_to(subs / "alice.ipynb")
    (subs / ".DS_Store").write_text("")  # system clutter: skipped
    found = {s.given: s for s in discover(subs, "00_introduction")}
    assert len(found) == 9 and len({s.id for s in found.values()}) == 9
    assert found["alice_2.ipynb"].id == "alice_2" and found["alice_2.ipynb"].name == "alice_2"
    alice, folder = found["alice.ipynb"], found["Alice/00_introduction.ipynb"]
    assert alice.id.startswith("alice~") and folder.id.startswith("Alice~") and alice.id != folder.id
    assert found[".dotty.ipynb"].path is not None and found[".dotty.ipynb"].name == ".dotty"
    assert found["Zoë.ipynb"].id.startswith("Zoe~") and found["Zoë.ipynb"].name == "Zoë"
    assert found["=HYPERLINK(1).ipynb"].name.startswith("'=")  # no formula in a spreadsheet
    assert len(found["y" * 240 + ".ipynb"].id) < 60
    assert "not a notebook" in found["notes.txt"].problem and "symbolic link" in found["link.ipynb"].problem
    again = {s.given: s.id for s in discover(subs, "00_introduction")}
    assert again == {g: s.id for g, s in found.items()}  # stable


def _zip(path: Path, entries: list[tuple[str, str]]) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
        warnings.simplefilter("ignore")  # duplicate names: that is the point
        for name, text in entries:
            z.writestr(name, text)
    return path


def test_damaged_and_duplicated_zip_entries_become_that_students_reason(tmp_path):
    archive = _zip(
        tmp_path / "export.zip",
        [
            ("bob.ipynb", "{}"),
            ("carol.ipynb", "first"),
            ("carol.ipynb", "second"),
            ("dave.ipynb", "x" * 1000),
        ],
    )
    data = bytearray(archive.read_bytes())
    at = data.index(b"x" * 1000)
    data[at : at + 4] = b"yyyy"  # the stored bytes no longer match the CRC
    archive.write_bytes(bytes(data))
    subs = {s.given: s for s in open_submissions(archive, "00_introduction", tmp_path / "unzipped")}
    assert subs["bob.ipynb"].path is not None
    assert subs["carol.ipynb"].path is None and "2 times" in subs["carol.ipynb"].problem
    assert subs["dave.ipynb"].path is None and "damaged" in subs["dave.ipynb"].problem


@pytest.mark.parametrize(
    "entries, message",
    [
        ([("a", "file"), ("a/b.ipynb", "{}")], "both as a file and as a folder"),
        ([("z" * 300 + ".ipynb", "{}")], "longer than 255 bytes"),
        ([("../evil.ipynb", "{}")], "unsafe path"),
    ],
)
def test_malformed_archives_are_refused_naming_the_file(tmp_path, entries, message):
    archive = _zip(tmp_path / "bad.zip", entries)
    with pytest.raises(SystemExit, match=message) as error:
        extract_zip(archive, tmp_path / "x")
    assert "bad.zip" in str(error.value)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(SystemExit, match="junk.zip is not a readable zip file"):
        extract_zip(tmp_path / "junk.zip", tmp_path / "y")


def test_student_release_has_no_solutions_and_no_hidden_checks(tmp_path, capsys):
    out = tmp_path / "release"
    assert course_main(["release", str(out), "--root", str(ROOT)]) == 0
    assert not (out / "solutions").exists() and (out / "exercises" / "00_introduction.ipynb").exists()
    assert not (out / "tests" / "test_assignments_grading.py").exists()  # it reads solutions/
    assert (out / "course_lib" / "assignments" / "sandbox.py").exists()
    for notebook in out.rglob("*.ipynb"):
        text = notebook.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "grade_check(" not in text, notebook
    assert "left out: " in capsys.readouterr().out
    assert course_main(["release", str(out), "--root", str(ROOT)]) == 2  # not an empty folder
    assert "not an empty folder" in capsys.readouterr().out


def test_release_refuses_a_notebook_that_still_holds_hidden_checks(tmp_path):
    root = tmp_path / "course"
    for folder in ["solutions", "exercises", "notebooks"]:
        (root / folder).mkdir(parents=True)
    leaky = {"cells": [{"cell_type": "code", "source": "### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS"}]}
    (root / "notebooks" / "leaky.ipynb").write_text(json.dumps(leaky))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    with pytest.raises(ValueError, match="leaky.ipynb contains '### BEGIN HIDDEN TESTS'"):
        release(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (root / "solutions" / "00_introduction.ipynb").write_text(
        (ROOT / "solutions" / "00_introduction.ipynb").read_text()
    )
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    with pytest.raises(
        ValueError, match="00_introduction.ipynb is out of date: run `python -m course_lib make-exe"
    ):
        release(root, tmp_path / "out")  # a tracked set whose exercise was never generated


def test_without_bubblewrap_the_grader_refuses_unless_told(tmp_path, monkeypatch, capsys):
    from course_lib.assignments import sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.bwrap_problem.cache_clear()
    subs, out = tmp_path / "subs", tmp_path / "results"
    subs.mkdir()
    (subs / "correct.ipynb").write_text((ROOT / "solutions" / "00_introduction.ipynb").read_text())
    args = ["grade", "00", str(subs), "--out", str(out), "--solutions", str(ROOT / "solutions")]
    try:
        assert course_main(args) == 2
        message = capsys.readouterr().out
        assert "refusing to run untrusted submissions" in message and "apt-get install bubblewrap" in message
        assert "--unsafe-no-sandbox" in message and not out.exists()
        assert course_main(args + ["--unsafe-no-sandbox", "--memory-mb", "1500"]) == 0
        assert "warning: --unsafe-no-sandbox" in capsys.readouterr().out
        assert json.loads((out / "correct.json").read_text())["total"] == 10
    finally:
        sandbox.bwrap_problem.cache_clear()
