"""The per-student feedback file, ``RESULTS/<student>.feedback.md``, rendered from the result record."""

from __future__ import annotations

RESULT_WORDS = {
    "pass": "pass",
    "fail": "FAIL (wrong output)",
    "error": "FAIL (error)",
    "timeout": "FAIL (timed out)",
    "memory": "FAIL (memory limit)",
    "policy": "FAIL (policy)",
    "missing": "FAIL (answer missing)",
}


def _escape(text: str) -> str:
    """Student-controlled text as inert Markdown: no HTML, no code-fence or table breaking."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("`", "'")
        .replace("\n", " ")
    )


def render(record: dict, task_order: list[str]) -> str:
    lines = [
        f"# Feedback: {_escape(record['student'])}, exercise set {record['set']}",
        "",
        f"**Total: {record['total']:g} / {record['max']:g} points** (status: {record['status']})",
        "",
        "| task | result | points | reason |",
        "|---|---|---|---|",
    ]
    for task_id in task_order:
        task = record["tasks"][task_id]
        lines.append(
            f"| {task_id} | {RESULT_WORDS.get(task['result'], task['result'])} | "
            f"{task['points']:g} / {task['max']:g} | {_escape(task['reason'])} |"
        )
    if record["notes"]:
        lines += ["", "Notes:", ""] + [f"- {_escape(note)}" for note in record["notes"]]
    lines += [
        "",
        "Points come only from the hidden checks: your functions were called on inputs you have not "
        "seen and their outputs compared with the reference solution's. The visible checks in the "
        "notebook are there to help you; passing them is necessary, not sufficient.",
        "",
    ]
    return "\n".join(lines)
