"""The packaging promises of the README: one dependency list in two formats, a working CLI."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# conda-forge names that differ from the PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}


def _split_requirement(req: str) -> tuple[str, str]:
    """'numpy>=1.26' -> ('numpy', '>=1.26'); names are normalised as PEP 503 does."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, f"cannot parse requirement {req!r}"
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), m.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return dict(_split_requirement(r) for r in reqs)


def _environment_requirements() -> dict[str, str]:
    """The conda + pip dependencies of environment.yml (a flat list; no YAML library needed)."""
    out = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s+([^\s#]+)\s*(#.*)?$", line)
        if not m or m.group(1) in {"conda-forge", "pip"} or m.group(1).startswith("python"):
            continue
        name, spec = _split_requirement(m.group(1).replace("=", "==", 1) if re.match(r"^[\w.-]+=[^=]", m.group(1)) else m.group(1))
        out[CONDA_TO_PYPI.get(name, name)] = spec
    return out


def test_environment_yml_lists_the_same_packages_as_pyproject():
    pyproject, conda = _pyproject_requirements(), _environment_requirements()
    assert set(pyproject) == set(conda), (
        f"only in pyproject.toml: {sorted(set(pyproject) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pyproject))}"
    )
    # Same lower bounds everywhere, except torch, which conda pins exactly (the Makefile pins it too).
    for name, spec in pyproject.items():
        if name != "torch":
            assert conda[name] == spec, f"{name}: pyproject.toml says {spec!r}, environment.yml {conda[name]!r}"


def test_torch_pin_agrees_between_makefile_and_environment_yml():
    makefile_pin = re.search(r"TORCH\s*\?=\s*torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert _environment_requirements()["torch"] == f"=={makefile_pin}"


def test_no_torchvision_dependency():
    assert "torchvision" not in _pyproject_requirements()


def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test\b", ci, re.M)


def test_cli_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "course_lib", "--help"], capture_output=True, text=True, check=True)
    from course_lib.__main__ import COMMANDS

    for name, _, _ in COMMANDS:
        assert name in out.stdout


def test_every_cli_command_module_exists_and_has_help(capsys):
    from course_lib.__main__ import COMMANDS, main

    for name, _, _ in COMMANDS:
        with pytest.raises(SystemExit) as stop:  # argparse exits 0 after printing the help
            main([name, "--help"])
        assert stop.value.code == 0, f"`python -m course_lib {name} --help` failed"
        assert f"usage: python -m course_lib {name}" in capsys.readouterr().out


def test_unknown_command_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "course_lib", "trian"], capture_output=True, text=True)
    assert out.returncode != 0 and "invalid choice" in out.stderr
