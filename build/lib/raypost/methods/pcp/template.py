"""Prompt templates with a ``{mask}`` slot, and verbalizers mapping labels to single-token words."""

from __future__ import annotations

import string

from raypost.errors import ConfigError, DataError

STEPGAME_LABELS = ("left", "right", "above", "below", "upper-left", "upper-right", "lower-left",
                   "lower-right", "overlap")
# WordPiece (BERT/MiniLM uncased): every word is one token; diagonals are compass directions.
STEPGAME_WORDS = {"left": "left", "right": "right", "above": "above", "below": "below",
                  "upper-left": "northwest", "upper-right": "northeast", "lower-left": "southwest",
                  "lower-right": "southeast", "overlap": "overlap"}
# Byte tokenizers (the tiny ByT5 one): one character each, laid out like a numeric keypad.
STEPGAME_CHARS = {"left": "4", "right": "6", "above": "8", "below": "2", "upper-left": "7", "upper-right": "9",
                  "lower-left": "1", "lower-right": "3", "overlap": "5"}


class PromptTemplate:
    """A ``str.format``-style prompt, e.g. ``"{text} Answer: {mask}."``, with exactly one ``{mask}``."""

    def __init__(self, template: str):
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigError(f"template {template!r} is not a valid format string ({exc})") from exc
        names = [name for _, name, _, _ in parsed if name is not None]
        if names.count("mask") != 1:
            raise ConfigError(f"template {template!r} needs exactly one {{mask}} slot, found {names.count('mask')}")
        if "" in names or any(not n.isidentifier() for n in names):
            raise ConfigError(f"template {template!r}: every slot needs a plain name like {{text}}")
        self.template = template
        self.fields = tuple(n for n in names if n != "mask")
        self._parsed = parsed

    def __repr__(self) -> str:
        return f"PromptTemplate({self.template!r})"

    def fill(self, row: dict, mask: str) -> str:
        """The prompt as text, with ``mask`` (e.g. the mask token or a label word) in the slot."""
        return self.template.format(mask=mask, **{f: self._value(row, f) for f in self.fields})

    def encode(self, row: dict, tokenizer, slot_id: int, max_prompt_length: int) -> tuple[list[int], int]:
        """Token ids (with the tokenizer's special tokens) and the index of the slot.

        Pieces are tokenised separately, so the slot is exactly one token (``slot_id``). If too long,
        tokens are cut from the end of the longest text field until it fits; never from the template.
        """
        parts: list[list[int]] = []
        is_field: list[bool] = []
        for literal, name, _, _ in self._parsed:
            if literal:
                parts.append(tokenizer(literal, add_special_tokens=False)["input_ids"])
                is_field.append(False)
            if name == "mask":
                slot = len(parts)
                parts.append([slot_id])
                is_field.append(False)
            elif name is not None:
                parts.append(tokenizer(self._value(row, name), add_special_tokens=False)["input_ids"])
                is_field.append(True)
        prefix, suffix = special_affixes(tokenizer)
        excess = len(prefix) + sum(map(len, parts)) + len(suffix) - max_prompt_length
        while excess > 0:
            longest = max((i for i in range(len(parts)) if is_field[i]), key=lambda i: len(parts[i]), default=None)
            if longest is None or not parts[longest]:
                raise DataError(f"template {self.template!r} alone exceeds max_prompt_length={max_prompt_length}")
            cut = min(excess, len(parts[longest]))
            parts[longest] = parts[longest][:-cut]
            excess -= cut
        ids = prefix + [t for p in parts for t in p] + suffix
        return ids, len(prefix) + sum(len(p) for p in parts[:slot])

    def _value(self, row: dict, name: str) -> str:
        if name not in row:
            raise DataError(f"template {self.template!r} needs field {name!r}; the row has {sorted(row)}")
        return str(row[name])


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sequence, e.g. ([CLS], [SEP])."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    at = next(i for i in range(len(full)) if full[i:i + len(bare)] == bare)
    return full[:at], full[at + len(bare):]


class Verbalizer:
    """Label -> label word; each word must be one token of ``tokenizer`` (and not its unknown token)."""

    def __init__(self, label_words: dict[str, str], tokenizer):
        if not label_words:
            raise ConfigError("a verbalizer needs at least one label")
        self.labels = list(label_words)
        self.words = [label_words[label] for label in self.labels]
        self.word_ids = []
        for label, word in label_words.items():
            ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                pieces = tokenizer.convert_ids_to_tokens(ids)
                raise ConfigError(f"label word {word!r} (label {label!r}) is not a single token for this "
                                  f"tokenizer: it tokenises to {pieces}")
            self.word_ids.append(ids[0])
        if len(set(self.word_ids)) != len(self.word_ids):
            raise ConfigError(f"verbalizer words {self.words} do not map to distinct tokens")

    def __repr__(self) -> str:
        return f"Verbalizer({dict(zip(self.labels, self.words))})"

    def index(self, label: str) -> int:
        if label not in self.labels:
            raise DataError(f"label {label!r} is not in the verbalizer (labels: {', '.join(self.labels)})")
        return self.labels.index(label)


def parse_verbalizer(spec: str) -> dict[str, str] | None:
    """``'stepgame'`` -> None (pick a default per tokenizer); ``'a:x,b:y'`` -> {"a": "x", "b": "y"}."""
    if spec == "stepgame":
        return None
    pairs = [p.split(":") for p in spec.split(",")]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ConfigError(f"verbalizer={spec!r} must be 'stepgame' or 'label:word,label:word,...'")
    mapping = {label.strip(): word.strip() for label, word in pairs}
    if len(mapping) != len(pairs):
        raise ConfigError(f"verbalizer={spec!r} names a label twice")
    return mapping


def make_verbalizer(spec: str | dict[str, str], tokenizer) -> Verbalizer:
    """A verbalizer from a config value; ``'stepgame'`` picks words when they are single tokens for
    ``tokenizer`` (WordPiece), else single characters (byte tokenizers)."""
    mapping = parse_verbalizer(spec) if isinstance(spec, str) else spec
    if mapping is not None:
        return Verbalizer(mapping, tokenizer)
    try:
        return Verbalizer(STEPGAME_WORDS, tokenizer)
    except ConfigError:
        return Verbalizer(STEPGAME_CHARS, tokenizer)
