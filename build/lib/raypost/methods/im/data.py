"""Instruction data: JSONL rows -> ``Example`` (a list of chat messages plus where it came from).

A row is either ``{"instruction", "input"?, "output"}`` or ``{"messages": [{"role", "content"}, ...]}``
with roles system/user/assistant. An instruction row becomes one user turn (instruction, then a
blank line and the input when there is one, as in the Tulu/IM data) and one assistant turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from raypost.errors import DataError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    messages: tuple[tuple[str, str], ...]
    """(role, content) pairs, content stripped."""
    source: str
    """Where the row came from, e.g. ``train.jsonl:17``; every error about the row names it."""


def example_from_row(row: object, source: str) -> Example:
    """Validate one parsed row; raise ``DataError`` naming ``source`` if it cannot be learnt from."""
    if not isinstance(row, dict):
        raise DataError(f"{source}: a row must be a JSON object, got {type(row).__name__}")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{source}: 'messages' must be a non-empty list")
        pairs = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{source}: message {i} needs a role in {', '.join(ROLES)} and a string content")
            pairs.append((m["role"], m["content"].strip()))
        if not any(role == "assistant" and text for role, text in pairs):
            raise DataError(f"{source}: row has no non-empty assistant message (nothing to learn as output)")
        return Example(tuple(pairs), source)
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise DataError(f"{source}: row has no {key!r} (expected instruction/input/output or messages)")
    user = row["instruction"].strip()
    if str(row.get("input") or "").strip():
        user += "\n\n" + str(row["input"]).strip()
    return Example((("user", user), ("assistant", row["output"].strip())), source)


def load_instruction_jsonl(path: str | Path) -> list[Example]:
    """Read an instruction JSONL file (blank lines skipped); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"instruction file {str(path)!r} does not exist")
    examples = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{source}: not valid JSON ({exc.msg})") from exc
            examples.append(example_from_row(row, source))
    if not examples:
        raise DataError(f"instruction file {str(path)!r} is empty (no rows)")
    return examples
