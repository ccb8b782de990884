"""Finding and reading student submissions, trusting nothing about them.

SUBMISSIONS is one of:

* a folder with one ``.ipynb`` per student (the student is the file);
* a folder with one sub-folder per student (the student is the folder); inside, the ``.ipynb``
  files are searched recursively; if there are several, the one whose name contains the set's
  name (``00_introduction``) or starts with its number (``00``) is taken, else the student is
  reported as invalid with the list of candidates;
* a ``.zip`` of either, extracted safely: absolute paths, ``..``, links, more than ``MAX_FILES``
  entries or ``MAX_ZIP_BYTES`` uncompressed, and a name used both as a file and as a folder are
  refused with an error naming the archive; a damaged entry (bad CRC) or one present several times
  becomes an invalid submission with that reason. A zip whose only content is one folder (platform
  exports) is opened one level down.

Every entry of the folder gets exactly one row: a notebook or a folder is a submission; any other
file (or a link) is reported as an invalid one, never silently dropped. Only system clutter
(``IGNORED``) is skipped. Each submission has

* ``given``: its name as given, relative to SUBMISSIONS (``Alice/00_introduction.ipynb``);
* ``name``: a display name (the stem, control characters removed, spreadsheet formulas defused);
* ``id``: a unique, stable file-name-safe id: the stem itself when it is plain ASCII (``alice``),
  else a short form of it plus ``~`` and a hash of ``given`` (``Zoë_Müller~3f9c2a1b``), also used
  for plain names that differ only in case (``alice.ipynb`` and ``Alice/``) or that both a file
  and a folder carry. Results are ``<id>.json`` and ``<id>.feedback.md``.

A submitted notebook is read as JSON with a size cap; only answer cells matched by their
nbgrader ``grade_id`` are used. If an answer cell appears several times the LAST one counts
(the one further down is the one the student ran last in a top-to-bottom run).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_NOTEBOOK_BYTES = 20 << 20
MAX_ZIP_BYTES = 2 << 30
MAX_FILES = 20000
IGNORED = {"__MACOSX", ".ipynb_checkpoints", ".DS_Store", "Thumbs.db", "desktop.ini", ".git"}
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class InvalidNotebook(ValueError):
    """The file is not a readable Jupyter notebook (the message says why)."""


@dataclass
class Submission:
    id: str  # unique, stable, safe as a file name: results are <id>.json and <id>.feedback.md
    name: str  # display name
    given: str  # the file or folder as given, relative to the submissions folder
    path: Path | None  # None when there is no usable notebook
    problem: str = ""  # why path is None


def display_name(stem: str, limit: int | None = 100) -> str:
    """The stem without control characters, at most ``limit`` characters, never a spreadsheet formula."""
    text = "".join(c for c in stem if unicodedata.category(c)[0] != "C").strip() or "(no name)"
    return ("'" + text if text[0] in "=+-@" else text)[:limit]


def _ids(stems: dict[str, str]) -> dict[str, str]:
    """{given: id} for {given: stem}: plain stems stay as they are unless they clash (ignoring case)."""
    counts = Counter(s.lower() for s in stems.values() if PLAIN.fullmatch(s))
    ids = {}
    for given, stem in stems.items():
        if PLAIN.fullmatch(stem) and counts[stem.lower()] == 1:
            ids[given] = stem
            continue
        ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
        short = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_stem).strip("._-")[:40] or "student"
        ids[given] = f"{short}~{hashlib.sha256(given.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return ids


def extract_zip(zip_path: Path, dest: Path) -> tuple[Path, dict[str, str]]:
    """Extract ``zip_path`` into ``dest`` after checking every entry.

    Returns the folder to grade and {extracted path: problem} for entries that could not be
    trusted (damaged, duplicated); those are written as empty files so the student still has a row.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SystemExit(f"error: {zip_path} is not a readable zip file ({exc})") from None
    problems = {}
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
        _check_entries(zip_path, infos)
        times = Counter(i.filename.rstrip("/") for i in infos)
        written = 0
        for info in infos:
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if times[info.filename] > 1:
                problems[str(target)] = (
                    f"the archive holds {info.filename} {times[info.filename]} times; "
                    "which one to grade is ambiguous (resubmit one file)"
                )
                target.write_bytes(b"")
                continue
            try:
                with archive.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):  # count real bytes too: headers can lie
                        written += len(chunk)
                        if written > MAX_ZIP_BYTES:
                            raise SystemExit(
                                f"error: {zip_path} expands past {MAX_ZIP_BYTES >> 30} GiB: refusing"
                            )
                        dst.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
                problems[str(target)] = f"the archive entry {info.filename} is damaged ({exc}); resubmit it"
                target.write_bytes(b"")
    entries = [p for p in dest.iterdir() if p.name not in IGNORED]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0], problems
    return dest, problems


def _check_entries(zip_path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse unsafe paths, links, and a name that is both a file and a folder."""
    files, folders = set(), set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise SystemExit(f"error: {zip_path} contains the unsafe path {name!r}; refusing to extract")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise SystemExit(f"error: {zip_path} contains a symbolic link {name!r}; refusing to extract")
        if any(len(p.encode()) > 255 for p in parts):
            raise SystemExit(
                f"error: {zip_path} contains a name longer than 255 bytes, which no file system takes "
                f"({name[:60]!r}...); rename it in the archive"
            )
        folders.update("/".join(parts[:k]) for k in range(1, len(parts)))
        (folders if info.is_dir() else files).add("/".join(parts))
    clash = sorted(files & folders)
    if clash:
        raise SystemExit(
            f"error: {zip_path} uses {clash[0]!r} both as a file and as a folder; fix the archive"
        )


def _notebooks_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*.ipynb")
        if p.is_file() and not p.is_symlink() and not set(p.relative_to(folder).parts) & IGNORED
    )


def _pick(entry: Path, set_name: str) -> tuple[Path | None, str]:
    """The notebook of a student folder, or (None, why not)."""
    notebooks = _notebooks_in(entry)
    if len(notebooks) > 1:
        number = set_name.split("_")[0]
        notebooks = [p for p in notebooks if set_name in p.stem or p.stem.startswith(number)] or notebooks
    if len(notebooks) == 1:
        return notebooks[0], ""
    if not notebooks:
        return None, f"no .ipynb file in the folder {entry.name}/"
    names = ", ".join(str(p.relative_to(entry)) for p in notebooks)
    return None, (
        f"several notebooks in {entry.name}/ ({names}); keep one, or name it after the set ({set_name}.ipynb)"
    )


def discover(folder: Path, set_name: str, problems: dict[str, str] | None = None) -> list[Submission]:
    """One Submission per entry of ``folder`` (system clutter aside), sorted by id."""
    found = []  # (given, stem, path, problem)
    for entry in sorted(folder.iterdir()):
        if entry.name in IGNORED:
            continue
        given = entry.name
        if entry.is_symlink():
            found.append((given, entry.name, None, f"{given} is a symbolic link; submit the file itself"))
        elif entry.is_dir():
            path, problem = _pick(entry, set_name)
            given = str(path.relative_to(folder)) if path else given + "/"
            found.append((given, entry.name, path, problem))
        elif entry.suffix.lower() == ".ipynb":
            found.append((given, entry.name[: -len(entry.suffix)], entry, ""))
        else:
            found.append((given, entry.stem, None, f"{given} is not a notebook (.ipynb)"))
    problems = problems or {}
    ids = _ids({given: stem for given, stem, _, _ in found})
    subs = []
    for given, stem, path, problem in found:
        if path is not None and str(path) in problems:
            path, problem = None, problems[str(path)]
        readable = given.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # odd bytes in names
        subs.append(Submission(ids[given], display_name(stem), readable, path, problem))
    return sorted(subs, key=lambda s: s.id)


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
    problems = {}
    if path.is_file() and path.suffix.lower() == ".zip":
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        path, problems = extract_zip(path, workdir)
    if not path.is_dir():
        raise SystemExit(f"error: {path} is neither a folder of submissions nor a .zip of one")
    return discover(path, set_name, problems)
