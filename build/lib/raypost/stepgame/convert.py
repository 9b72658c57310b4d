"""StepGame as instruction rows for Instruction Modelling: instruction, input, output."""

from __future__ import annotations

from raypost.stepgame.checker import rows_of
from raypost.stepgame.labels import LABEL_WORDS, format_input, label_word, story_list

INSTRUCTION = (
    "The story describes where agents stand on a grid. Answer the question with the relation "
    f"of the first agent to the second, one of: {', '.join(LABEL_WORDS)}."
)


def to_instruction_rows(dataset) -> list[dict]:
    """One ``{"instruction", "input", "output"}`` per example; output is the label word. A story
    may be a list of sentences or one string (``story_list``)."""
    return [{"instruction": INSTRUCTION, "input": format_input(story_list(r["story"]), r["question"]),
             "output": label_word(r["label"])} for r in rows_of(dataset)]
