"""Batches of encoded rows: right padding, labels, and per-token loss weights."""

from __future__ import annotations

import torch

from raypost.errors import ConfigError
from raypost.methods.im.template import OUTPUT, Encoded

Batch = dict[str, torch.Tensor]


def segment_weights(segments: list[int], instruction_weight: float) -> list[float]:
    """Template -> 0, instruction -> lambda, output -> 1."""
    return [(0.0, instruction_weight, 1.0)[s] for s in segments]


def collate(rows: list[Encoded], pad_token_id: int, instruction_weight: float, kind: str = "causal") -> Batch:
    """``input_ids``, ``attention_mask``, ``labels`` (-100 where the weight is 0) and ``loss_weights``.

    Causal LMs: labels are aligned with ``input_ids`` (the loss shifts them). Encoder-decoders:
    the encoder reads everything before the last output and the decoder predicts that output;
    instruction tokens are then never a target, so only ``instruction_weight=0`` is defined.
    """
    if kind == "seq2seq":
        return _collate_seq2seq(rows, pad_token_id, instruction_weight)
    if kind != "causal":
        raise ConfigError(f"IM trains causal or seq2seq language models, not kind {kind!r}")
    width = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    loss_weights = torch.zeros((len(rows), width), dtype=torch.float)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids = torch.tensor(r.input_ids)
        w = torch.tensor(segment_weights(r.segments, instruction_weight))
        input_ids[i, :n], attention_mask[i, :n], loss_weights[i, :n] = ids, 1, w
        labels[i, :n] = torch.where(w > 0, ids, torch.full_like(ids, -100))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "loss_weights": loss_weights}


def _collate_seq2seq(rows: list[Encoded], pad_token_id: int, instruction_weight: float) -> Batch:
    if instruction_weight != 0:
        raise ConfigError(f"instruction_weight={instruction_weight} needs a causal LM: an encoder-decoder "
                          "reads the instruction in its encoder, so only instruction_weight=0 applies")
    sources, targets = [], []
    for r in rows:
        end = max(i for i, s in enumerate(r.segments) if s == OUTPUT) + 1
        start = end
        while start > 0 and r.segments[start - 1] == OUTPUT:
            start -= 1
        sources.append(r.input_ids[:start])
        targets.append(r.input_ids[start:end])
    enc = _pad(sources, pad_token_id)
    labels = _pad(targets, -100)
    return {"input_ids": enc, "attention_mask": (_pad(sources, -1) != -1).long(), "labels": labels,
            "loss_weights": (labels != -100).float()}


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out
