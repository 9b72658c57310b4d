"""The nine StepGame labels, their grid offsets, the words models see, and answer matching.

A label names where agent X is relative to agent Y; its offset is ``pos(X) - pos(Y)`` on a
grid with x to the right and y upwards (one unit per step).
"""

from __future__ import annotations

import re

LABELS = ("left", "right", "above", "below", "upper-left", "upper-right", "lower-left", "lower-right", "overlap")
LABEL2ID = {label: i for i, label in enumerate(LABELS)}
ID2LABEL = dict(enumerate(LABELS))  # for a classification head's config
OFFSETS = {
    "left": (-1, 0), "right": (1, 0), "above": (0, 1), "below": (0, -1),
    "upper-left": (-1, 1), "upper-right": (1, 1), "lower-left": (-1, -1), "lower-right": (1, -1),
    "overlap": (0, 0),
}
DIRECTIONS = LABELS[:8]  # the relations a story sentence can state between two agents
INVERSE = {label: next(o for o, d in OFFSETS.items() if d == (-dx, -dy)) for label, (dx, dy) in OFFSETS.items()}


_BY_SIGNS = {offset: label for label, offset in OFFSETS.items()}


def label_of_offset(dx: int, dy: int) -> str:
    """The label of an offset ``pos(X) - pos(Y)`` (only the signs matter)."""
    return _BY_SIGNS[(dx > 0) - (dx < 0), (dy > 0) - (dy < 0)]


def label_word(label: str) -> str:
    """The answer text a generative model is trained to produce: 'upper-left' -> 'upper left'."""
    return label.replace("-", " ")


LABEL_WORDS = tuple(label_word(label) for label in LABELS)

_SYNONYMS = {"upper": "upper", "top": "upper", "lower": "lower", "bottom": "lower"}
_ANSWER = re.compile(
    r"\b(upper|top|lower|bottom) ?(left|right)\b"  # diagonals first: 'upper left' is not 'left'
    r"|\b(left|right|above|below|over|under|overlap|overlaps|overlapping)\b"
)
_SINGLE = {"over": "above", "under": "below", "overlaps": "overlap", "overlapping": "overlap"}


def match_label(text: str | None) -> str | None:
    """Map a model's answer text to a label, or None when it names none.

    Handles 'upper left', 'Upper-Left.', 'top_right', 'the answer is left'. When the text
    says 'answer', the first label after its last 'answer' wins; otherwise the first label.
    """
    if text is None:
        return None
    if text in LABEL2ID:
        return text
    norm = re.sub(r"[\s_\-]+", " ", text.lower())
    start = norm.rfind("answer")
    for m in _ANSWER.finditer(norm, start if start >= 0 else 0):
        if m.group(1):
            return f"{_SYNONYMS[m.group(1)]}-{m.group(2)}"
        return _SINGLE.get(m.group(3), m.group(3))
    return None if start < 0 else match_label(norm[:start])


def story_list(story) -> list[str]:
    """A story as a list of sentences (a plain string is one sentence; arrays from pandas are lists)."""
    return [story] if isinstance(story, str) else [str(s) for s in story]


def format_input(story: list[str], question: str) -> str:
    """The text every model reads for one example (classifiers, seq2seq and causal LMs alike)."""
    return f"Story: {' '.join(s.strip() for s in story)}\nQuestion: {question.strip()}"
