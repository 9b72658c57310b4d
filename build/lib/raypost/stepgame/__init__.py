"""StepGame (Shi, Zhang & Lipani, AAAI 2022): loader, generator, symbolic checker, evaluator.

See docs/stepgame.md. Heavy dependencies (datasets, matplotlib, mlflow) load on first use.
"""

from raypost.stepgame.checker import Check, check_example, check_rows, format_table, summarize
from raypost.stepgame.convert import INSTRUCTION, to_instruction_rows
from raypost.stepgame.evaluate import StepgameResult, evaluate, log_to_mlflow, to_markdown, write_results
from raypost.stepgame.generator import generate, generate_example
from raypost.stepgame.labels import (
                                     ID2LABEL,
                                     LABEL2ID,
                                     LABEL_WORDS,
                                     LABELS,
                                     format_input,
                                     label_of_offset,
                                     label_word,
                                     match_label,
)
from raypost.stepgame.loader import load_stepgame, read_rows, save_stepgame
from raypost.stepgame.templates import TEMPLATES, parse_question, parse_sentence

__all__ = [
    "LABELS", "LABEL2ID", "ID2LABEL", "LABEL_WORDS", "INSTRUCTION", "TEMPLATES", "Check", "StepgameResult",
    "load_stepgame", "read_rows", "save_stepgame", "format_input", "label_word", "label_of_offset", "match_label",
    "generate", "generate_example", "parse_sentence", "parse_question", "check_example", "check_rows",
    "summarize", "format_table", "evaluate", "to_markdown", "write_results", "log_to_mlflow",
    "to_instruction_rows",
]
