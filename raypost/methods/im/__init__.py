"""Instruction Modelling (Shi et al., "Instruction Tuning With Loss Over Instructions", NeurIPS 2024).

Pure PyTorch/transformers: data loading, the chat template with exact token segments, the
weighted loss and the trainable part. See docs/im.md.
"""

from raypost.methods.im.collate import collate, segment_weights
from raypost.methods.im.config import ImConfig
from raypost.methods.im.data import Example, example_from_row, load_instruction_jsonl
from raypost.methods.im.loss import im_loss, output_only_loss, weighted_ce_sums, weighted_lm_loss
from raypost.methods.im.model import lora_target_modules, make_trainable
from raypost.methods.im.template import (
    INSTRUCTION,
    OUTPUT,
    TEMPLATE,
    Encoded,
    encode_example,
    paper_pieces,
    resolve_chat_template,
    tokenizer_pieces,
    truncate,
)

__all__ = [
    "INSTRUCTION", "OUTPUT", "TEMPLATE", "Encoded", "Example", "ImConfig", "collate", "encode_example",
    "example_from_row", "im_loss", "load_instruction_jsonl", "lora_target_modules",
    "make_trainable", "output_only_loss", "paper_pieces", "resolve_chat_template", "segment_weights",
    "tokenizer_pieces", "truncate",
    "weighted_ce_sums", "weighted_lm_loss",
]
