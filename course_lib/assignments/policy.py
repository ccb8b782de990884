"""Static policy check of the student's answer cells (``ast`` only, nothing is executed).

Rules, each reported with the line it was found on:

* an ``import`` of a module outside the set's allowed list (``course.allowed_imports`` in the
  source's metadata) -- every task is flagged, since an imported module can be used anywhere;
* dynamic code (``exec``, ``eval``, ``compile``, ``__import__``, ``__builtins__``, ``globals()``) or
  introspection that reaches them (``obj.__globals__``, ``__subclasses__``, ...), which could hide
  anything -- every task is flagged;
* a name a task forbids (``grade_check(..., forbid=["course_lib.distributions.gaussian_kl"])``),
  resolved through import aliases (``from course_lib import distributions as D; D.gaussian_kl``)
  -- that task is flagged.

The check reads exactly the text that runs (``markers.strip_magics`` applied first). A cell
that does not parse is never run (``syntax_errors``: the grader reports it as an error), so
nothing it holds can run unchecked.

This is a teaching aid that catches honest shortcuts, not a security boundary: determined code
can always hide what it calls from a static reader. The sandbox is the boundary (docs/grading.md).
"""

from __future__ import annotations

import ast

DYNAMIC = {
    "__import__",
    "exec",
    "eval",
    "compile",
    "__builtins__",
    "globals",
    "locals",
    "vars",
    "breakpoint",
    "open",
    "setattr",
    "delattr",
}
# attributes that reach the interpreter or the system from an allowed module (``torch.sys.modules``)
REACH = {"sys", "os", "builtins", "ctypes", "ctypeslib", "subprocess", "importlib", "pickle"}
INTROSPECTION = {
    "__globals__",
    "__subclasses__",
    "__builtins__",
    "__code__",
    "__dict__",
    "__class__",
    "__bases__",
    "__base__",
    "__mro__",
    "__getattribute__",
    "__loader__",
    "__spec__",
}


def _dynamic_getattr(node: ast.Call) -> bool:
    """``getattr(x, name)`` where name is not a plain literal attribute name."""
    if not (isinstance(node.func, ast.Name) and node.func.id in {"getattr", "hasattr"}):
        return False
    name = node.args[1] if len(node.args) > 1 else None
    return not (
        isinstance(name, ast.Constant) and isinstance(name.value, str) and not name.value.startswith("_")
    )


def _allowed(module: str, allowed: list[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``np.linalg.norm`` -> ``numpy.linalg.norm`` using the import aliases; None if not a name chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id)] + parts[::-1])


def syntax_errors(answers: dict[str, str]) -> dict[str, str]:
    """{answer grade_id: message} for the cells that do not parse; the grader does not run them."""
    broken = {}
    for gid, code in answers.items():
        try:
            ast.parse(code)
        except SyntaxError as exc:
            broken[gid] = f"SyntaxError: {exc.msg} (line {exc.lineno} of {gid}); the cell was not run"
        except (ValueError, RecursionError, MemoryError) as exc:
            broken[gid] = f"{type(exc).__name__}: the cell cannot be parsed; it was not run"
    return broken


def check_policy(
    answers: dict[str, str], allowed: list[str], forbid: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Reasons per task: ``answers`` maps answer grade_id -> code, ``forbid`` maps task -> dotted names.

    Returns {task: [reason, ...]} for flagged tasks only. Cells listed by ``syntax_errors`` are
    skipped here: they are never run.
    """
    broken = syntax_errors(answers)
    trees = {gid: ast.parse(code) for gid, code in answers.items() if gid not in broken}
    aliases, everywhere = {}, []
    for gid, tree in trees.items():
        for node in ast.walk(tree):
            where = f"answer cell {gid}, line {getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                    if not _allowed(a.name, allowed):
                        everywhere.append(
                            f"{where}: imports `{a.name}`, which is not allowed in this set "
                            f"(allowed: {', '.join(allowed)})"
                        )
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for a in node.names:
                    full = f"{module}.{a.name}"
                    aliases[a.asname or a.name] = full
                    if node.level or not (_allowed(module, allowed) or _allowed(full, allowed)):
                        everywhere.append(
                            f"{where}: imports `{full}`, which is not allowed in this set "
                            f"(allowed: {', '.join(allowed)})"
                        )
            elif isinstance(node, ast.Name) and node.id in DYNAMIC:
                everywhere.append(f"{where}: uses `{node.id}` (dynamic code is not allowed in answers)")
            elif isinstance(node, ast.Attribute) and node.attr in INTROSPECTION:
                everywhere.append(f"{where}: uses `.{node.attr}` (introspection is not allowed in answers)")
            elif isinstance(node, ast.Attribute) and node.attr in REACH:
                everywhere.append(
                    f"{where}: uses `.{node.attr}` (it reaches the system, not allowed in answers)"
                )
            elif isinstance(node, ast.Call) and _dynamic_getattr(node):
                everywhere.append(f"{where}: uses `getattr` with a computed or special name")
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                everywhere.append(f"{where}: uses `allow_pickle` (loading pickles runs code)")
    flagged = {}
    for task, names in forbid.items():
        reasons = list(everywhere)
        for gid, tree in trees.items():
            for node in ast.walk(tree):
                if isinstance(node, (ast.Name, ast.Attribute)):
                    used = [_dotted(node, aliases)]
                elif isinstance(node, ast.ImportFrom):
                    used = [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for hit in (n for n in names for d in used if d and (d == n or d.startswith(n + "."))):
                    reasons.append(
                        f"answer cell {gid}, line {node.lineno}: uses `{hit}`, the reference "
                        "implementation this task asks you to write yourself"
                    )
        if reasons:
            flagged[task] = sorted(set(reasons))
    return flagged
