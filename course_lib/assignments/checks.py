"""Hidden checks as data: ``grade_check(function, cases=[...])`` in a test cell's hidden region.

An instructor writes, inside ``### BEGIN HIDDEN TESTS`` of a test cell::

    from course_lib.assignments import grade_check, random_dirichlet, random_integers
    grade_check(categorical_kl, cases=[
        dict(p=[0.0, 1.0], q=[0.5, 0.5]),                      # a fixed edge case
        dict(p=random_dirichlet([1.0] * 6, size=4, seed=1),     # drawn at grading time
             q=random_dirichlet([1.0] * 6, size=(random_integers(2, 5, seed=2), 6), seed=3)),
    ], rtol=1e-6, atol=1e-9, forbid=["scipy.special.rel_entr"])

Each case is the keyword arguments of one call. A value is a Python literal (a number stays a
number; a list becomes a NumPy array), ``array(x, dtype=...)``, a random draw (``random_uniform``,
``random_normal``, ``random_integers``, ``random_dirichlet``; with no ``size`` a draw is a Python
number) or ``as_tensor(x, dtype=...)`` for a torch tensor (made inside the sandbox). ``forbid``
lists dotted names the answer must not use (policy check).

**Hidden inputs are drawn at grading time.** The ``seed=`` of a draw is only a stream number:
the numbers come from ``default_rng([grading_seed, seed])``, where the grading seed is the one
the instructor passes to ``grade --seed`` (or ``$COURSE_GRADING_SEED``; see ``grading_seed``).
``solutions/`` may be public: reading this code tells a student the shapes and the generators,
not the numbers, and a task scores only when every case matches, drawn ones included.

Two readers of the same text:

* in the solution notebook the call simply runs (``grade_check`` calls the function on every
  case, so the solution proves that the hidden inputs are valid); it draws with
  ``$COURSE_GRADING_SEED`` (default 0), so ``COURSE_GRADING_SEED=N`` shows the inputs of ``--seed N``;
* the grader never executes it: ``parse_checks`` reads the call with ``ast`` and evaluates only
  literals and the generator functions above, with the grading seed, then runs the student's
  and the solution's functions on the same inputs in sandboxes and compares their outputs in
  its own process.
"""

from __future__ import annotations

import ast
import os
from contextvars import ContextVar
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
    "grading_seed",
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


SEED_VARIABLE = "COURSE_GRADING_SEED"
_SEED: ContextVar[int | None] = ContextVar("grading_seed", default=None)


def check_seed(value, where: str) -> int:
    """A grading seed as an int >= 0, or a ValueError naming ``where`` it came from and the fix."""
    try:
        seed = int(value)
    except (TypeError, ValueError):
        seed = -1
    if seed < 0 or str(value).strip() != str(seed):
        raise ValueError(f"{where} must be a whole number >= 0 (got {value!r}), e.g. {where}=20261201")
    return seed


def grading_seed() -> int:
    """The seed hidden inputs are drawn from: the grader's while it reads checks, else $COURSE_GRADING_SEED, else 0."""
    seed = _SEED.get()
    if seed is not None:
        return seed
    value = os.environ.get(SEED_VARIABLE, "").strip()
    return check_seed(value, SEED_VARIABLE) if value else 0


def _rng(stream) -> np.random.Generator:
    return np.random.default_rng([grading_seed(), check_seed(stream, "the seed of a random_* draw")])


def _number(values: np.ndarray, size):
    """A draw with no ``size`` is a plain Python number (so it can be a scalar argument or a size)."""
    return values.item() if size is None else values


def random_uniform(low=0.0, high=1.0, size=None, seed=0):
    return _number(np.asarray(_rng(seed).uniform(low, high, size)), size)


def random_normal(size=None, seed=0, loc=0.0, scale=1.0):
    return _number(np.asarray(_rng(seed).normal(loc, scale, size)), size)


def random_integers(low, high, size=None, seed=0, dtype="int64"):
    """Integers in [low, high) (high excluded, like ``range``)."""
    return _number(np.asarray(_rng(seed).integers(low, high, size)).astype(dtype), size)


def random_dirichlet(alpha, size=None, seed=0) -> np.ndarray:
    """Probability vectors along the last axis: shape ``size + (len(alpha),)``."""
    return _rng(seed).dirichlet(alpha, size)


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
    drawn: int = 0  # cases with at least one input drawn at grading time


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


def parse_checks(code: str, where: str, seed: int | None = None) -> list[Check]:
    """The ``grade_check`` calls of a hidden-tests region, read without executing anything.

    Draws use ``seed`` (the grading seed) when given, else ``grading_seed()``.
    """
    token = _SEED.set(seed)
    try:
        body = ast.parse(code).body
        return [_parse_call(s, where) for s in body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    finally:
        _SEED.reset(token)


def _is_draw(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id.startswith("random_")
        for n in ast.walk(node)
    )


def _parse_call(stmt: ast.stmt, where: str) -> Check:
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
    nodes = {k.arg: k.value for k in call.keywords}
    cases_node = call.args[1] if len(call.args) > 1 else nodes.pop("cases", None)
    unknown = set(nodes) - {"rtol", "atol", "forbid"}
    if unknown:
        raise ValueError(f"{where}, line {stmt.lineno}: unknown grade_check option(s) {sorted(unknown)}")
    kwargs = {k: _evaluate(v, where) for k, v in nodes.items()}
    cases = _evaluate(cases_node, where) if cases_node is not None else None
    if not cases or not all(isinstance(c, dict) for c in cases):
        raise ValueError(f"{where}, line {stmt.lineno}: `cases` must be a non-empty list of dict(...)")
    return Check(
        call.args[0].id,
        [{k: normalise_input(v) for k, v in c.items()} for c in cases],
        float(kwargs.get("rtol", 1e-6)),
        float(kwargs.get("atol", 1e-8)),
        list(kwargs.get("forbid", [])),
        drawn=sum(_is_draw(c) for c in getattr(cases_node, "elts", [])),
    )
