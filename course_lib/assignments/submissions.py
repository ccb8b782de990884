"""Finding and reading student submissions, trusting nothing about them.

SUBMISSIONS is one of:

* a folder with one ``.ipynb`` per student (the student's name is the file stem);
* a folder with one sub-folder per student (the name is the folder's); inside, the ``.ipynb``
  files are searched recursively; if there are several, the one whose name contains the set's
  name (``00_introduction``) or starts with its number (``00``) is taken, else the student is
  reported as invalid with the list of candidates;
* a ``.zip`` of either, extracted safely: absolute paths, ``..``, links, more than
  ``MAX_FILES`` entries or ``MAX_ZIP_BYTES`` uncompressed are refused. A zip whose only content
  is one folder (platform exports) is opened one level down.

A submitted notebook is read as JSON with a size cap; only answer cells matched by their
nbgrader ``grade_id`` are used. If an answer cell appears several times the LAST one counts
(the one further down is the one the student ran last in a top-to-bottom run).
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

MAX_NOTEBOOK_BYTES = 20 << 20
MAX_ZIP_BYTES = 2 << 30
MAX_FILES = 20000
IGNORED = {"__MACOSX", ".ipynb_checkpoints"}


class InvalidNotebook(ValueError):
    """The file is not a readable Jupyter notebook (the message says why)."""


@dataclass
class Submission:
    student: str  # a safe file-name stem
    path: Path | None  # None when the student's folder has no usable notebook
    problem: str = ""  # why path is None


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "student"
    if base.lower() in {"grades", "grades.csv"}:
        base = f"student_{base}"
    name, k = base, 2
    while name.lower() in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name.lower())
    return name


def extract_zip(zip_path: Path, dest: Path) -> Path:
    """Extract ``zip_path`` into ``dest`` after checking every entry; return the folder to grade."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SystemExit(f"error: {zip_path} is not a readable zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_FILES:
            raise SystemExit(
                f"error: {zip_path} has {len(infos)} entries (limit {MAX_FILES}); unzip it yourself"
            )
        total = sum(i.file_size for i in infos)
        if total > MAX_ZIP_BYTES:
            raise SystemExit(
                f"error: {zip_path} expands to {total / 2**30:.1f} GiB (limit "
                f"{MAX_ZIP_BYTES / 2**30:.0f} GiB): refusing a possible zip bomb"
            )
        for info in infos:
            parts = Path(info.filename).parts
            if (
                info.filename.startswith(("/", "\\"))
                or ".." in parts
                or re.match(r"^[A-Za-z]:", info.filename)
            ):
                raise SystemExit(
                    f"error: {zip_path} contains the unsafe path {info.filename!r}; refusing to extract"
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SystemExit(
                    f"error: {zip_path} contains a symbolic link {info.filename!r}; refusing to extract"
                )
        written = 0
        for info in infos:
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):  # count real bytes too: headers can lie
                    written += len(chunk)
                    if written > MAX_ZIP_BYTES:
                        raise SystemExit(
                            f"error: {zip_path} expands past {MAX_ZIP_BYTES >> 30} GiB: refusing"
                        )
                    dst.write(chunk)
    entries = [p for p in dest.iterdir() if p.name not in IGNORED]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _notebooks_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*.ipynb")
        if p.is_file() and not p.is_symlink() and not set(p.relative_to(folder).parts) & IGNORED
    )


def discover(folder: Path, set_name: str) -> list[Submission]:
    """One Submission per student in ``folder``, sorted by student name."""
    found, taken = [], set()
    for entry in sorted(folder.iterdir()):
        if entry.name in IGNORED or entry.name.startswith(".") or entry.is_symlink():
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            found.append(Submission(_safe_name(entry.stem, taken), entry))
        elif entry.is_dir():
            name = _safe_name(entry.name, taken)
            notebooks = _notebooks_in(entry)
            if len(notebooks) > 1:
                number = set_name.split("_")[0]
                notebooks = [
                    p for p in notebooks if set_name in p.stem or p.stem.startswith(number)
                ] or notebooks
            if len(notebooks) == 1:
                found.append(Submission(name, notebooks[0]))
            elif not notebooks:
                found.append(Submission(name, None, f"no .ipynb file in the folder {entry.name}/"))
            else:
                names = ", ".join(str(p.relative_to(entry)) for p in notebooks)
                found.append(
                    Submission(
                        name,
                        None,
                        f"several notebooks in {entry.name}/ ({names}); keep one, "
                        f"or name it after the set ({set_name}.ipynb)",
                    )
                )
    return sorted(found, key=lambda s: s.student)


def read_cells(path: Path) -> list[dict]:
    """The cells of a submitted notebook (format 4), each with a str ``source``; InvalidNotebook otherwise."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidNotebook("the file is empty")
    if size > MAX_NOTEBOOK_BYTES:
        raise InvalidNotebook(
            f"the file is {size / 2**20:.0f} MB, over the {MAX_NOTEBOOK_BYTES >> 20} MB limit "
            "(clear the outputs and save again)"
        )
    try:
        nb = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidNotebook(
            f"the file is not valid JSON ({str(exc)[:120]}); was it saved from Jupyter as .ipynb?"
        ) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        version = nb.get("nbformat") if isinstance(nb, dict) else None
        raise InvalidNotebook(
            "the file is JSON but not a Jupyter notebook (no list of cells)"
            + (f"; nbformat {version} is too old, open and save it in Jupyter" if version else "")
        )
    cells = []
    for cell in nb["cells"]:
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        meta = cell.get("metadata")
        nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
        grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
        cells.append(
            {
                "cell_type": str(cell.get("cell_type")),
                "source": source if isinstance(source, str) else "",
                "grade_id": grade_id if isinstance(grade_id, str) else None,
            }
        )
    return cells


def answer_sources(cells: list[dict], answer_ids: list[str]) -> tuple[dict[str, str], list[str]]:
    """The student's code per answer grade_id (last occurrence wins) and notes about duplicates."""
    answers, counts = {}, {}
    for cell in cells:
        if cell["cell_type"] == "code" and cell["grade_id"] in answer_ids:
            answers[cell["grade_id"]] = cell["source"]
            counts[cell["grade_id"]] = counts.get(cell["grade_id"], 0) + 1
    notes = [
        f"answer cell {gid} appears {n} times; the last one was graded" for gid, n in counts.items() if n > 1
    ]
    return answers, notes


def open_submissions(path: Path, set_name: str, workdir: Path) -> list[Submission]:
    """``discover`` on a folder, or on a zip extracted into ``workdir``."""
    if path.is_file() and path.suffix.lower() == ".zip":
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        path = extract_zip(path, workdir)
    if not path.is_dir():
        raise SystemExit(f"error: {path} is neither a folder of submissions nor a .zip of one")
    return discover(path, set_name)
