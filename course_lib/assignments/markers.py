"""nbgrader-style markers inside cell sources, handled with plain string code.

A solution cell of ``solutions/NN_*.ipynb`` holds the full answer between two marker lines::

    def categorical_kl(p, q):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

The student version replaces the region by ``# YOUR CODE HERE`` and ``raise NotImplementedError()``
at the indentation of the ``BEGIN`` line (Markdown cells get ``YOUR ANSWER HERE``). A test cell
may end with a region the students never see::

    ### BEGIN HIDDEN TESTS
    grade_check(categorical_kl, cases=[...])
    ### END HIDDEN TESTS

``strip_hidden`` deletes it (markers included); ``hidden_region`` returns what is inside.
A marker that is not closed, closed twice or nested is an error naming the line, never a guess.
"""

from __future__ import annotations

import re

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_STUB = ["YOUR ANSWER HERE"]


class MarkerError(ValueError):
    """A marker region in a source cell is malformed (the message names the cell and line)."""


def _regions(source: str, begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """Line index pairs (begin_line, end_line) of each region; raises MarkerError if unbalanced."""
    regions, start = [], None
    for i, line in enumerate(source.splitlines()):
        text = line.strip()
        if text == begin:
            if start is not None:
                raise MarkerError(
                    f"{where}, line {i + 1}: '{begin}' inside an open region (line {start + 1})"
                )
            start = i
        elif text == end:
            if start is None:
                raise MarkerError(f"{where}, line {i + 1}: '{end}' without a '{begin}' before it")
            regions.append((start, i))
            start = None
    if start is not None:
        raise MarkerError(f"{where}, line {start + 1}: '{begin}' is never closed with '{end}'")
    return regions


def has_marker(source: str, begin: str) -> bool:
    return any(line.strip() == begin for line in source.splitlines())


def strip_solution(source: str, cell_type: str = "code", where: str = "cell") -> str:
    """Replace every solution region by the student stub, keeping the BEGIN line's indentation."""
    lines = source.splitlines()
    out, last = [], 0
    for begin, end in _regions(source, BEGIN_SOLUTION, END_SOLUTION, where):
        indent = re.match(r"\s*", lines[begin]).group(0)
        stub = CODE_STUB if cell_type == "code" else MARKDOWN_STUB
        out += lines[last:begin] + [indent + s for s in stub]
        last = end + 1
    return "\n".join(out + lines[last:])


def strip_hidden(source: str, where: str = "cell") -> str:
    """Delete every hidden-tests region, markers included, and trailing blank lines."""
    lines = source.splitlines()
    out, last = [], 0
    for begin, end in _regions(source, BEGIN_HIDDEN, END_HIDDEN, where):
        out += lines[last:begin]
        last = end + 1
    return "\n".join(out + lines[last:]).rstrip()


def hidden_region(source: str, where: str = "cell") -> str:
    """The code inside the hidden-tests regions (joined), dedented to column 0."""
    lines = source.splitlines()
    body = []
    for begin, end in _regions(source, BEGIN_HIDDEN, END_HIDDEN, where):
        body += lines[begin + 1 : end]
    indent = min((len(x) - len(x.lstrip()) for x in body if x.strip()), default=0)
    return "\n".join(x[indent:] for x in body)


# Cell magics whose body is Python that Jupyter runs (once, or timed): the grader runs the body once.
PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun"}
PYTHON_LINE_MAGICS = {"time", "timeit", "prun"}  # ``%time stmt`` runs ``stmt``


def strip_magics(source: str) -> str:
    """The plain Python the grader runs for a cell written for IPython; this exact text is also
    what the policy check reads.

    ``%%time`` (``%%timeit``, ``%%capture``, ``%%prun``) on the first line: the rest of the cell
    is kept. Any other cell magic (``%%bash``, ``%%writefile``) is not Python: the whole cell
    becomes ``pass``. A line ``%time stmt`` keeps ``stmt``; other line magics (``%matplotlib``)
    and shell lines (``!ls``) become ``pass`` at their indentation.
    """
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        name = lines[0].lstrip()[2:].split(maxsplit=1)[0] if lines[0].strip() != "%%" else ""
        if name not in PYTHON_CELL_MAGICS:
            return f"pass  # IPython cell magic %%{name}: not Python, the grader does not run this cell"
        lines = [f"pass  # IPython cell magic %%{name}: the grader runs the cell once"] + lines[1:]
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        words = stripped[1:].split(maxsplit=1)
        if stripped.startswith("%") and words and words[0] in PYTHON_LINE_MAGICS and len(words) == 2:
            out.append(indent + words[1])
        elif stripped.startswith(("%", "!")):
            out.append(indent + "pass  # IPython line magic removed by the grader")
        else:
            out.append(line)
    return "\n".join(out)
