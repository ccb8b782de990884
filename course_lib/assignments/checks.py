"""Hidden checks as data: ``grade_check(function, cases=[...])`` in a test cell's hidden region.

An instructor writes, inside ``### BEGIN HIDDEN TESTS`` of a test cell::

    from course_lib.assignments import grade_check, random_dirichlet, as_tensor
    grade_check(categorical_kl, cases=[
        dict(p=[0.5, 0.5], q=[0.9, 0.1]),
        dict(p=random_dirichlet([1.0] * 6, size=4, seed=1), q=random_dirichlet([1.0] * 6, size=4, seed=2)),
    ], rtol=1e-6, atol=1e-9, forbid=["scipy.special.rel_entr"])

Each case is the keyword arguments of one call. A value is a Python literal (a number stays a
number; a list becomes a NumPy array), ``array(x, dtype=...)``, a seeded random array
(``random_uniform``, ``random_normal``, ``random_integers``, ``random_dirichlet``) or
``as_tensor(x, dtype=...)`` for a torch tensor (the array is turned into a tensor inside the
sandbox). ``forbid`` lists dotted names the answer must not use (policy check).

Two readers of the same text:

* in the solution notebook the call simply runs (``grade_check`` calls the function on every
  case, so the solution proves that the hidden inputs are valid);
* the grader never executes it: ``parse_checks`` reads the call with ``ast`` and evaluates only
  literals and the generator functions above, then calls the student's and the solution's
  functions on the same inputs in sandboxed subprocesses and compares their outputs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "grade_check",
    "array",
    "as_tensor",
    "random_uniform",
    "random_normal",
    "random_integers",
    "random_dirichlet",
    "Check",
    "parse_checks",
    "to_numpy_outputs",
]


@dataclass(frozen=True)
class TensorInput:
    """A NumPy array that the sandbox hands to the function as ``torch.from_numpy(array)``."""

    array: np.ndarray


def array(value, dtype=None) -> np.ndarray:
    return np.asarray(value, dtype=dtype)


def as_tensor(value, dtype="float32") -> TensorInput:
    return TensorInput(np.asarray(value, dtype=dtype))


def random_uniform(low=0.0, high=1.0, size=None, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size)


def random_normal(size=None, seed=0, loc=0.0, scale=1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size)


def random_integers(low, high, size=None, seed=0, dtype="int64") -> np.ndarray:
    """Integers in [low, high) (high excluded, like ``range``)."""
    return np.random.default_rng(seed).integers(low, high, size).astype(dtype)


def random_dirichlet(alpha, size=None, seed=0) -> np.ndarray:
    """Probability vectors along the last axis: shape ``size + (len(alpha),)``."""
    return np.random.default_rng(seed).dirichlet(alpha, size)


GENERATORS = {
    f.__name__: f
    for f in (array, as_tensor, random_uniform, random_normal, random_integers, random_dirichlet)
}


def normalise_input(value):
    """A case value as the sandbox receives it: a Python scalar, a NumPy array or a TensorInput."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, TensorInput):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"hidden-test input {value!r} is not numeric (dtype {arr.dtype})")
    return arr


@dataclass
class Check:
    """One ``grade_check`` call: the function's name, its inputs and the tolerances of the comparison."""

    function: str
    cases: list[dict]  # one dict of keyword arguments per call, values normalised
    rtol: float = 1e-6
    atol: float = 1e-8
    forbid: list[str] = field(default_factory=list)


def to_numpy_outputs(value) -> list[np.ndarray]:
    """A function's return value as a list of plain arrays (a tuple gives several outputs)."""
    items = value if isinstance(value, tuple) else (value,)
    outputs = []
    for item in items:
        if hasattr(item, "detach") and hasattr(item, "cpu"):  # a torch tensor
            item = item.detach().cpu().numpy()
        arr = np.asarray(item)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"returned a value of type {type(item).__name__} (dtype {arr.dtype}), not numbers"
            )
        outputs.append(arr)
    return outputs


def _materialise(value):
    if isinstance(value, TensorInput):
        import torch

        return torch.from_numpy(value.array.copy())
    return value.copy() if isinstance(value, np.ndarray) else value


def grade_check(function, cases, rtol=1e-6, atol=1e-8, forbid=()):
    """Run ``function`` on every hidden case (in the solution notebook); return the outputs.

    The grader does not run this: it reads the call's arguments with ``parse_checks``.
    """
    check = Check(
        getattr(function, "__name__", str(function)),
        [{k: normalise_input(v) for k, v in dict(case).items()} for case in cases],
        float(rtol),
        float(atol),
        list(forbid),
    )
    return [
        to_numpy_outputs(function(**{k: _materialise(v) for k, v in case.items()})) for case in check.cases
    ]


# ---------------------------------------------------------------- the grader's reader (no exec)


def _evaluate(node: ast.AST, where: str):
    """Evaluate literals and calls of the generator functions; anything else is an error."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in GENERATORS | {"dict": dict}
    ):
        args = [_evaluate(a, where) for a in node.args]
        kwargs = {k.arg: _evaluate(k.value, where) for k in node.keywords if k.arg is not None}
        return (dict if node.func.id == "dict" else GENERATORS[node.func.id])(*args, **kwargs)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(e, where) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_evaluate(k, where): _evaluate(v, where) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub, ast.Div, ast.Pow)):
        left, right = _evaluate(node.left, where), _evaluate(node.right, where)
        ops = {
            ast.Mult: lambda a, b: a * b,
            ast.Add: lambda a, b: a + b,
            ast.Sub: lambda a, b: a - b,
            ast.Div: lambda a, b: a / b,
            ast.Pow: lambda a, b: a**b,
        }
        return ops[type(node.op)](left, right)
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in {"np", "math"}
        and node.attr in {"inf", "nan", "pi", "e"}
    ):
        return float(getattr(np, node.attr))
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(
            f"{where}: cannot read `{ast.unparse(node)}` as hidden-test data; use literals, "
            f"dict(...), or {', '.join(sorted(GENERATORS))}"
        ) from None


def parse_checks(code: str, where: str) -> list[Check]:
    """The ``grade_check`` calls of a hidden-tests region, read without executing anything."""
    checks = []
    for stmt in ast.parse(code).body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "grade_check"
            and call.args
            and isinstance(call.args[0], ast.Name)
        ):
            raise ValueError(
                f"{where}, line {stmt.lineno}: a hidden-tests region may only hold imports and "
                "`grade_check(function_name, cases=[...])` calls"
            )
        kwargs = {k.arg: _evaluate(k.value, where) for k in call.keywords}
        cases = _evaluate(call.args[1], where) if len(call.args) > 1 else kwargs.pop("cases", None)
        if not cases or not all(isinstance(c, dict) for c in cases):
            raise ValueError(f"{where}, line {stmt.lineno}: `cases` must be a non-empty list of dict(...)")
        unknown = set(kwargs) - {"rtol", "atol", "forbid"}
        if unknown:
            raise ValueError(f"{where}, line {stmt.lineno}: unknown grade_check option(s) {sorted(unknown)}")
        checks.append(
            Check(
                call.args[0].id,
                [{k: normalise_input(v) for k, v in c.items()} for c in cases],
                float(kwargs.get("rtol", 1e-6)),
                float(kwargs.get("atol", 1e-8)),
                list(kwargs.get("forbid", [])),
            )
        )
    return checks
