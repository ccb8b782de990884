"""Exercise generation from solutions/, the markers, hidden checks as data, and the policy check."""

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_lib.__main__ import main as course_main
from course_lib.assignments.checks import grade_check, parse_checks
from course_lib.assignments.markers import (
    MarkerError,
    hidden_region,
    strip_hidden,
    strip_magics,
    strip_solution,
)
from course_lib.assignments.policy import check_policy, syntax_errors
from course_lib.assignments.source import find_sets, load_set, make_exercise_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("source", find_sets(ROOT / "solutions"), ids=lambda p: p.stem)
def test_exercises_are_up_to_date(source):
    """exercises/NN_*.ipynb must be byte-identical to what make-exercises writes now."""
    target = ROOT / "exercises" / source.name
    assert target.exists(), f"{target} is missing: run `python -m course_lib make-exercises`"
    assert target.read_text(encoding="utf-8") == make_exercise_text(load_set(source)), (
        f"{target} is out of date with {source}: run `python -m course_lib make-exercises`"
    )


def test_make_exercises_check_flag(tmp_path, capsys):
    args = ["make-exercises", "--solutions", str(ROOT / "solutions"), "--exercises", str(tmp_path)]
    assert course_main(args + ["--check"]) == 1  # empty folder: out of date
    assert course_main(args) == 0
    assert course_main(args + ["--check"]) == 0
    first = (tmp_path / "00_introduction.ipynb").read_bytes()
    assert (
        course_main(args) == 0 and (tmp_path / "00_introduction.ipynb").read_bytes() == first
    )  # deterministic


def test_broken_source_gives_a_clear_error(tmp_path, capsys):
    nb = json.loads((ROOT / "solutions" / "00_introduction.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "answer_categorical_kl":
            cell["source"] = "def categorical_kl(p, q):\n    ### BEGIN SOLUTION\n    return 0\n"
    (tmp_path / "00_broken.ipynb").write_text(json.dumps(nb))
    args = ["make-exercises", "--solutions", str(tmp_path), "--exercises", str(tmp_path / "ex")]
    assert course_main(args) == 2
    assert "'### BEGIN SOLUTION' is never closed" in capsys.readouterr().out


def test_exercise_00_has_no_solutions_hidden_tests_or_outputs():
    nb = nbformat.read(ROOT / "exercises" / "00_introduction.ipynb", as_version=4)
    nbformat.validate(nb)
    text = json.dumps(nb)
    for secret in (
        "BEGIN SOLUTION",
        "HIDDEN TESTS",
        "grade_check",
        "np.log(p) - np.log(q)",
        "random_dirichlet",
    ):
        assert secret not in text
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    answers = [c for c in code if c.metadata["nbgrader"]["solution"]]
    assert len(answers) == 4 and all("raise NotImplementedError()" in c.source for c in answers)
    points = {
        c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
        for c in code
        if c.metadata["nbgrader"]["grade"]
    }
    assert points == {"categorical_mle": 2, "categorical_kl": 3, "cross_entropy": 2, "bits_per_dim": 3}


def test_strip_solution_keeps_indentation_and_markdown_stub():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n\ny = 1"
    assert strip_solution(src) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ny = 1"
    assert (
        strip_solution("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "markdown")
        == "Why?\nYOUR ANSWER HERE"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
    ],
)
def test_unbalanced_markers_are_errors(bad):
    with pytest.raises(MarkerError, match="line"):
        strip_solution(bad, where="cell t")


def test_hidden_region_and_strip_hidden():
    hidden = "### BEGIN HIDDEN TESTS\n    grade_check(f, cases=[dict(x=3)])\n### END HIDDEN TESTS"
    src = "assert f(1) == 2\n" + hidden
    assert strip_hidden(src) == "assert f(1) == 2"
    assert hidden_region(src) == "grade_check(f, cases=[dict(x=3)])"


def test_magics_become_plain_python_and_cell_magics_keep_the_answer():
    removed = "pass  # IPython line magic removed by the grader"
    assert strip_magics("%matplotlib inline\nx = 1\n  !ls") == f"{removed}\nx = 1\n  {removed}"
    timed = strip_magics("%%time\ndef f(x):\n    %time y = 2 * x\n    return y")
    assert timed.splitlines()[1:] == ["def f(x):", "    y = 2 * x", "    return y"]  # same line numbers
    assert strip_magics("%%bash\nrm -rf /").startswith("pass  # IPython cell magic %%bash: not Python")


def test_policy_reads_the_text_that_runs():
    """Issue 16: a first line that does not parse (``!x``) once hid ``import os`` from the check."""
    allowed, forbid = ["numpy"], {"kl": []}
    runs = strip_magics("!x\nimport os\nexec(open('/solutions/00.ipynb').read())")
    assert any("imports `os`" in r for r in check_policy({"a": runs}, allowed, forbid)["kl"])
    (message,) = syntax_errors({"a": "def broken(:", "b": "x = 1"}).values()
    assert message.startswith("SyntaxError") and message.endswith("(line 1 of a); the cell was not run")


@pytest.mark.parametrize(
    "code, rule",
    [
        ("import numpy as np\nb = getattr(np, '__builtins__')", "getattr"),
        ("import torch\nm = torch.sys.modules['os']", ".sys"),
        ("import numpy as np\nx = np.load('f.npy', allow_pickle=True)", "allow_pickle"),
        ("import numpy as np\np = np.zeros(3).ctypes.data", ".ctypes"),
        ("text = open('/etc/passwd').read()", "open"),
    ],
)
def test_policy_flags_the_escapes_of_issue_16(code, rule):
    flagged = check_policy({"a": code}, ["numpy", "torch"], {"kl": []})
    assert any(rule in r for r in flagged.get("kl", [])), flagged


def test_parse_checks_reads_data_and_matches_the_notebook_call():
    code = (
        "from course_lib.assignments import grade_check, random_dirichlet, as_tensor\n"
        "grade_check(f, cases=[dict(p=[0.5, 0.5], n=3), dict(p=random_dirichlet([1.0] * 3, size=2, seed=4),"
        " n=-1, t=as_tensor([1, 2]))], rtol=1e-3, forbid=['scipy.special.rel_entr'])"
    )
    (check,) = parse_checks(code, "cell t")
    assert check.function == "f" and check.rtol == 1e-3 and check.forbid == ["scipy.special.rel_entr"]
    assert check.cases[0]["n"] == 3 and check.cases[0]["p"].dtype == np.float64
    np.testing.assert_array_equal(check.cases[1]["p"], np.random.default_rng([0, 4]).dirichlet([1.0] * 3, 2))
    assert check.cases[1]["t"].array.dtype == np.float32
    assert check.drawn == 1  # the second case draws its input at grading time
    # the same call in a notebook runs the function on the same inputs
    outputs = grade_check(lambda p, n, t=None: np.sum(p) * n, cases=[dict(p=[0.5, 0.5], n=3)])
    assert outputs[0][0] == 3.0


def test_hidden_inputs_are_drawn_from_the_grading_seed(monkeypatch):
    """The seed in the source is a stream number: the numbers change with the grader's seed, and the
    notebook draws exactly what the grader draws when given the same seed ($COURSE_GRADING_SEED)."""
    code = (
        "grade_check(f, cases=[dict(x=random_normal(size=(random_integers(2, 9, seed=1), 3), seed=2),"
        " n=random_integers(0, 10**9, seed=3))])"
    )

    def draw(seed):
        return parse_checks(code, "cell t", seed=seed)[0].cases[0]

    a, b, a_again = draw(1), draw(2), draw(1)
    assert isinstance(a["n"], int) and a["x"].shape[1] == 3 and 2 <= a["x"].shape[0] < 9
    assert a["n"] != b["n"] and a["n"] == a_again["n"]
    np.testing.assert_array_equal(a["x"], a_again["x"])
    monkeypatch.setenv("COURSE_GRADING_SEED", "2")
    from course_lib.assignments.checks import random_integers

    assert random_integers(0, 10**9, seed=3) == b["n"]  # what the solution notebook draws
    assert parse_checks(code, "cell t")[0].cases[0]["n"] == b["n"]  # no seed given: the variable's
    monkeypatch.setenv("COURSE_GRADING_SEED", "minus one")
    with pytest.raises(ValueError, match="COURSE_GRADING_SEED must be a whole number"):
        random_integers(0, 10, seed=3)


def test_sets_without_drawn_inputs_are_reported(tmp_path):
    nb = json.loads((ROOT / "solutions" / "00_introduction.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "categorical_mle":
            text = "".join(cell["source"])
            head = text[: text.index("### BEGIN HIDDEN TESTS")]
            cell["source"] = head + (
                "### BEGIN HIDDEN TESTS\nfrom course_lib.assignments import grade_check\n"
                "grade_check(categorical_mle, cases=[dict(counts=[1, 2])])\n### END HIDDEN TESTS\n"
            )
    (tmp_path / "00_introduction.ipynb").write_text(json.dumps(nb))
    assert load_set(ROOT / "solutions" / "00_introduction.ipynb").warnings == []
    (warning,) = load_set(tmp_path / "00_introduction.ipynb").warnings
    assert "categorical_mle" in warning and "hard-code" in warning


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.system('echo hi')",
        "grade_check(f, cases=[dict(x=open('/etc/passwd'))])",
        "grade_check(f, cases=[])",
        "grade_check(f, cases=[dict(x=1)], tolerance=2)",
    ],
)
def test_parse_checks_rejects_anything_but_data(code):
    with pytest.raises(ValueError):
        parse_checks(code, "cell t")


def test_policy_resolves_aliases_and_flags_per_task():
    forbid = {"kl": ["course_lib.distributions.gaussian_kl"], "other": []}
    allowed = ["numpy", "course_lib.distributions"]
    ok = check_policy({"a": "import numpy as np\ndef kl(m, v):\n    return np.sum(m)"}, allowed, forbid)
    assert ok == {}
    aliased = check_policy(
        {"a": "from course_lib import distributions as D\ndef kl(m):\n    return D.gaussian_kl(m)"},
        allowed + ["course_lib"],
        forbid,
    )
    assert list(aliased) == ["kl"] and "gaussian_kl" in aliased["kl"][0]
    imported = check_policy(
        {"a": "from course_lib.distributions import gaussian_kl as g\ndef kl(m):\n    return g(m)"},
        allowed,
        forbid,
    )
    assert list(imported) == ["kl"]
    everything = check_policy({"a": "import subprocess", "b": "x = eval('1')"}, allowed, forbid)
    assert set(everything) == {"kl", "other"} and any("subprocess" in r for r in everything["other"])
    assert any("eval" in r for r in everything["other"])
    escape = check_policy({"a": "x = ().__class__.__base__.__subclasses__()"}, allowed, forbid)
    assert set(escape) == {"kl", "other"} and any("__subclasses__" in r for r in escape["kl"])
    assert check_policy({"a": "def broken(:"}, allowed, forbid) == {}  # never run: an error (syntax_errors)


@pytest.mark.slow
def test_solution_00_runs_top_to_bottom_in_a_kernel(monkeypatch):
    """The source notebook itself executes cleanly (visible checks and hidden grade_check calls)."""
    import nbclient

    monkeypatch.setenv("COURSE_FAST", "1")
    nb = nbformat.read(ROOT / "solutions" / "00_introduction.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert printed.count("visible checks passed") == 4
    assert not any(
        o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
