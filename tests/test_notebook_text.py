"""Committed notebooks: their text and their outputs agree where a machine can check it.

* No absolute paths of the machine that ran them in any output (/work, /tmp, /root, /home, /Users).
* No links into the lecture texts (``../shared/seeds``): students do not have them; lectures are
  cited by title and institution.
* A number written in Markdown with the marker ``<!--out-->`` right after it (invisible when
  rendered) is a number the run printed: it must occur, as a whole number, in the outputs of one of
  the notebook's code cells. Rerun a notebook with other results and this test says which prose to
  update.
* Notebook 06 says where and in how long it ran (its last cell), and the README quotes that time.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(?<![\w.$])/(work|tmp|root|home|Users)/")
MARKED = re.compile(r"(\d[\d,.]*)<!--\s*out\s*-->")


def cells(path):
    return json.loads(path.read_text())["cells"]


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append("".join(out["text"]))
        elif out["output_type"] in ("execute_result", "display_data"):
            for kind, data in out["data"].items():
                text = "".join(data)
                if kind == "text/plain" or kind.startswith("text/") and len(text) < 20_000:  # not embedded animations
                    parts.append(text)
        elif out["output_type"] == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_paths_in_outputs(path):
    for i, cell in enumerate(cells(path)):
        text = output_text(cell) if cell["cell_type"] == "code" else ""
        match = MACHINE_PATH.search(text)
        assert match is None, f"{path.name}, cell {i}: output shows a machine path: ...{text[max(0, match.start() - 60):match.end() + 40]}..."


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_links_to_the_lecture_texts(path):
    for i, cell in enumerate(cells(path)):
        source = "".join(cell["source"])
        assert "shared/seeds" not in source and "seeds/" not in source, f"{path.name}, cell {i} points into the lecture texts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_marked_numbers_in_the_text_were_printed(path):
    nb = cells(path)
    printed = "\n".join(output_text(c) for c in nb if c["cell_type"] == "code")
    for i, cell in enumerate(nb):
        if cell["cell_type"] != "markdown":
            continue
        for number in MARKED.findall("".join(cell["source"])):
            number = number.rstrip(".,")
            assert re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", printed), \
                f"{path.name}, cell {i}: the text quotes {number}, which no output of this run prints"


def test_the_marker_is_used_and_found():
    """The check above is not vacuous: notebook 06 marks its quoted numbers."""
    text = "".join("".join(c["source"]) for c in cells(ROOT / "notebooks" / "06_diffusion_ddpm.ipynb"))
    assert len(MARKED.findall(text)) >= 4


def test_notebook_06_states_its_run_and_the_readme_quotes_it():
    last = output_text(cells(ROOT / "notebooks" / "06_diffusion_ddpm.ipynb")[-1])
    match = re.search(r"This notebook ran in (\d+) s on (.+) \((fast|full) mode\)", last)
    assert match, f"the last cell of notebook 06 must print its run time, device and mode; it prints {last!r}"
    if match.group(3) == "fast":
        pytest.skip("notebook 06 is committed in fast mode (a full-mode run is pending)")
    minutes = int(match.group(1)) / 60
    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r"06 in (\d+) min", readme)
    assert quoted, "README: the run times line should quote notebook 06 ('06 in N min')"
    assert abs(int(quoted.group(1)) - minutes) <= 0.5 + 1e-9, \
        f"README says 06 ran in {quoted.group(1)} min; the notebook printed {minutes:.1f} min"
