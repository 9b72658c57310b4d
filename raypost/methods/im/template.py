"""Chat template + tokenisation by pieces: every token carries the segment it came from.

A row is written as a list of pieces ``(text or token ids, segment)`` and each piece is tokenised
on its own, then concatenated, so the spans are exact by construction (no searching the token
sequence for tag strings, which is how the reference code's mask missed most template tokens).

Segments: ``TEMPLATE`` (role tags, separators; loss weight 0), ``INSTRUCTION`` (system/user
content; weight lambda) and ``OUTPUT`` (assistant content plus its end token; weight 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from raypost.errors import ConfigError, DataError
from raypost.methods.im.data import Example

TEMPLATE, INSTRUCTION, OUTPUT = 0, 1, 2
PAPER_TAGS = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"}


@dataclass
class Encoded:
    input_ids: list[int]
    segments: list[int]
    source: str


def paper_pieces(example: Example, tokenizer) -> list[tuple[str | list[int], int]]:
    """The IM/Tulu format: ``<|user|>\\n{user}\\n<|assistant|>\\n{output}</s>`` (turns joined by \\n)."""
    pieces: list[tuple[str | list[int], int]] = []
    if _adds_bos(tokenizer):  # e.g. Llama: the reference code tokenises with the tokenizer's BOS
        pieces.append(([tokenizer.bos_token_id], TEMPLATE))
    for i, (role, text) in enumerate(example.messages):
        if i:
            pieces.append(("\n", TEMPLATE))
        pieces.append((PAPER_TAGS[role], TEMPLATE))
        if role == "assistant":
            pieces += [(text, OUTPUT), ([tokenizer.eos_token_id], OUTPUT)]
        else:
            pieces.append((text, INSTRUCTION))
    return pieces


def tokenizer_pieces(example: Example, tokenizer) -> list[tuple[str | list[int], int]]:
    """The tokenizer's own chat template, split around each message's content.

    The template is rendered once with placeholders in place of the contents; the text between
    placeholders is template. The end-of-turn token the template writes after an assistant message
    (its first special token) counts as output so the model learns to stop; if there is none, EOS
    is appended as output.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("chat_template='tokenizer' but the tokenizer has no chat template; use 'paper'")
    marks = [f"\ue000{i}\ue001" for i in range(len(example.messages))]

    def render(contents: list[str]) -> str:
        messages = [{"role": role, "content": c} for (role, _), c in zip(example.messages, contents)]
        return tokenizer.apply_chat_template(messages, tokenize=False)

    skeleton = render(marks)
    parts, rest = [], skeleton
    for mark in marks:
        if rest.count(mark) != 1:
            raise DataError(f"{example.source}: the tokenizer's chat template does not write each message "
                            "exactly once; use chat_template='paper'")
        before, rest = rest.split(mark)
        parts.append(before)
    contents = [text for _, text in example.messages]
    if "".join(p + c for p, c in zip(parts, contents)) + rest != render(contents):
        raise DataError(f"{example.source}: the tokenizer's chat template rewrites message text; "
                        "use chat_template='paper'")
    pieces: list[tuple[str | list[int], int]] = []
    for (role, text), before in zip(example.messages, parts):
        pieces += [(before, TEMPLATE), (text, OUTPUT if role == "assistant" else INSTRUCTION)]
    pieces.append((rest, TEMPLATE))
    return _end_of_turn_as_output(pieces, tokenizer)


def resolve_chat_template(chat_template: str, tokenizer) -> str:
    """``auto`` -> ``tokenizer`` when the tokenizer has its own chat template, else ``paper``.
    An instruction-tuned model is trained and asked in the format it was tuned on."""
    if chat_template != "auto":
        return chat_template
    return "tokenizer" if getattr(tokenizer, "chat_template", None) else "paper"


def encode_example(example: Example, tokenizer, chat_template: str = "auto",
                   max_seq_length: int | None = None) -> Encoded:
    """Tokenise ``example`` piece by piece; truncate by the rule in ``truncate``."""
    chat_template = resolve_chat_template(chat_template, tokenizer)
    pieces = paper_pieces(example, tokenizer) if chat_template == "paper" else tokenizer_pieces(example, tokenizer)
    ids, segments = [], []
    for piece, segment in pieces:
        piece_ids = _ids(piece, tokenizer)
        ids += piece_ids
        segments += [segment] * len(piece_ids)
    return truncate(Encoded(ids, segments, example.source), max_seq_length)


def truncate(enc: Encoded, max_seq_length: int | None) -> Encoded:
    """Drop the oldest tokens of an over-long row, but never an output token.

    If even everything from the first output token on does not fit, raise ``DataError`` naming the
    row: silently dropping output would train on a different answer.
    """
    excess = len(enc.input_ids) - (max_seq_length or len(enc.input_ids))
    if excess <= 0:
        return enc
    first_output = enc.segments.index(OUTPUT)
    if excess > first_output:
        raise DataError(f"{enc.source}: {len(enc.input_ids)} tokens exceed max_seq_length={max_seq_length} "
                        f"and its output part alone takes {len(enc.input_ids) - first_output}; "
                        "raise max_seq_length or shorten the row")
    return Encoded(enc.input_ids[excess:], enc.segments[excess:], enc.source)


def _ids(piece: str | list[int], tokenizer) -> list[int]:
    if isinstance(piece, list):
        return piece
    return tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def _end_of_turn_as_output(pieces, tokenizer):
    """Move the end-of-turn token that follows each assistant content into the output segment."""
    special = set(tokenizer.all_special_ids)
    out, i = [], 0
    while i < len(pieces):
        out.append(pieces[i])
        if pieces[i][1] == OUTPUT:  # assistant content; pieces[i + 1] is the template after it
            after = _ids(pieces[i + 1][0], tokenizer)
            stop = next((j for j, t in enumerate(after) if t in special), None)
            if stop is None:
                out += [([tokenizer.eos_token_id], OUTPUT), (after, TEMPLATE)]
            else:
                out += [(after[:stop + 1], OUTPUT), (after[stop + 1:], TEMPLATE)]
            i += 1
        i += 1
    return out
