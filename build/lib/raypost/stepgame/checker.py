"""Symbolic checker: read a story into relative coordinates and derive the answer.

Every sentence is parsed literally with the shared template table into an edge
'a is LABEL of b'. The answer is the offset from the reference agent Y to the queried agent X
along every simple path between them: one offset gives the answer and the hop distance (the
fewest sentences linking X and Y); several offsets mean the story contradicts itself. Cycles
away from the X-Y paths and self-referencing sentences that break no link are ignored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from raypost.stepgame.labels import OFFSETS, label_of_offset
from raypost.stepgame.templates import parse_question, parse_sentence

REASONS = ("unparsed question", "unparsed sentence", "self reference", "no path", "contradiction", "answer differs")
MAX_STEPS = 100_000  # StepGame stories have at most a few cycles; this only guards odd inputs


@dataclass(frozen=True)
class Check:
    answer: str | None  # the label the story implies; None when it implies none
    hops: int  # fewest sentences linking the queried pair; -1 when they are not linked
    reason: str | None = None  # None when the story reproduces the label, else one of REASONS
    detail: str = ""  # the sentence at fault, or the competing answers

    @property
    def ok(self) -> bool:
        return self.reason is None


def check_example(story: list[str], question: str, label: str | None = None) -> Check:
    """Check one example; with ``label=None`` only derive the answer and the hop distance."""
    pair = parse_question(question)
    if pair is None:
        return Check(None, -1, "unparsed question", question)
    x, y = pair
    graph: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    self_refs = []
    for sentence in story:
        parsed = parse_sentence(sentence)
        if parsed is None:
            return Check(None, -1, "unparsed sentence", sentence)
        a, relation, b = parsed
        if a == b:
            self_refs.append(sentence)
            continue
        dx, dy = OFFSETS[relation]
        graph[b].append((a, dx, dy))
        graph[a].append((b, -dx, -dy))
    paths = _paths(graph, y, x)  # (dx, dy) -> fewest hops
    if not paths:
        reason = "self reference" if self_refs else "no path"
        return Check(None, -1, reason, self_refs[0] if self_refs else f"{x} and {y} are not linked")
    hops = min(paths.values())
    if len(paths) > 1:
        seen = ", ".join(f"{label_of_offset(*o)} {o}" for o in sorted(paths, key=paths.get))
        return Check(None, hops, "contradiction", f"paths give {seen}")
    answer = label_of_offset(*next(iter(paths)))
    if label is not None and answer != label:
        return Check(answer, hops, "answer differs", f"story says {answer}, label says {label}")
    return Check(answer, hops)


def _paths(graph, start: str, goal: str) -> dict[tuple[int, int], int]:
    """Offsets of ``goal`` from ``start`` along every simple path, each with its fewest hops."""
    if start == goal:
        return {(0, 0): 0}
    found: dict[tuple[int, int], int] = {}
    stack = [(start, 0, 0, 0, frozenset([start]))]
    steps = 0
    while stack and steps < MAX_STEPS:
        node, dx, dy, hops, seen = stack.pop()
        steps += 1
        for nxt, ex, ey in graph.get(node, ()):
            if nxt in seen:
                continue
            offset = (dx + ex, dy + ey)
            if nxt == goal:
                found[offset] = min(found.get(offset, hops + 1), hops + 1)
            else:
                stack.append((nxt, *offset, hops + 1, seen | {nxt}))
    return found


def rows_of(data) -> list[dict]:
    """A ``datasets.Dataset`` (converted in one go: iterating one is slow) or rows, as a list."""
    return data.to_list() if hasattr(data, "to_list") else list(data)


def check_rows(rows) -> list[Check]:
    """Check rows with story, question and label (a ``datasets.Dataset`` or a list of dicts)."""
    return [check_example(r["story"], r["question"], r["label"]) for r in rows_of(rows)]


def summarize(checks: list[Check], rows) -> list[dict]:
    """One row per (setting, k): examples, reproduced, count per reason, share not reproduced."""
    groups: dict[tuple[str, int], list[Check]] = defaultdict(list)
    for check, row in zip(checks, rows_of(rows)):
        groups[("noisy" if row["noisy"] else "clean", row["k"])].append(check)
    table = []
    for (setting, k), group in sorted(groups.items()):
        counts = {reason: sum(c.reason == reason for c in group) for reason in REASONS}
        failed = sum(counts.values())
        table.append({"setting": setting, "k": k, "n": len(group), "reproduced": len(group) - failed,
                      **counts, "not_reproduced_share": round(failed / len(group), 4)})
    return table


def format_table(table: list[dict]) -> str:
    """The summary as a Markdown table (what ``raypost data stepgame-check`` prints)."""
    cols = ["setting", "k", "n", "reproduced", *REASONS, "not_reproduced_share"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in table]
    return "\n".join(lines)
