"""Stage 1: masked-LM continued pre-training on task texts written into the prompt template.

Texts are masked by transformers' ``DataCollatorForLanguageModeling`` (``mask_prob`` of the
tokens; of those 80% [MASK], 10% random, 10% kept). Special tokens, including a [MASK] already in
the template's slot, are never targets. The recipe reuses ``pcp_texts``/``mlm_batches``/``mlm_loss``
inside its data-parallel stage-1 loop.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raypost.methods.pcp.template import PromptTemplate, Verbalizer
from raypost.models import BaseModel, load_base

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


def load_mlm(name: str, seed: int = 0) -> BaseModel:
    """``load_base(name, "masked_lm")``, warning when the checkpoint has no MLM head (e.g. MiniLM)."""
    base = load_base(name, "masked_lm", seed=seed)
    missing = fresh_head_keys(base.model)
    if missing:
        log.warning("model %r has no masked-LM head in its checkpoint (missing %s): the head is freshly "
                    "initialised, so its predictions start random until stage 1 (cpt_steps > 0) or "
                    "fine-tuning trains it", name, ", ".join(missing))
    return base


def fresh_head_keys(model: nn.Module) -> list[str]:
    """Head weights (outside the base encoder, not tied to it) absent from the local checkpoint."""
    folder = Path(getattr(model, "name_or_path", "") or "")
    stored = _checkpoint_keys(folder) if folder.is_dir() else None
    if stored is None:  # a config-built model or a hub id: nothing to compare with
        return []
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    prefix = model.base_model_prefix + "."
    head = [k for k in model.state_dict() if not k.startswith(prefix) and k not in tied]
    return [] if any(k in stored for k in head) else head


def pcp_texts(template: PromptTemplate, rows: Sequence[dict], tokenizer, max_prompt_length: int = 256,
              verbalizer: Verbalizer | None = None, pseudo_labels: Sequence[str] | None = None) -> list[list[int]]:
    """Rows written into the template as token ids: the slot holds [MASK], or the pseudo-label's word."""
    if pseudo_labels is not None and (verbalizer is None or len(pseudo_labels) != len(rows)):
        raise ValueError("pseudo_labels need a verbalizer and one label per row")
    out = []
    for i, row in enumerate(rows):
        slot = (tokenizer.mask_token_id if pseudo_labels is None
                else verbalizer.word_ids[verbalizer.index(pseudo_labels[i])])
        out.append(template.encode(row, tokenizer, slot, max_prompt_length)[0])
    return out


def mlm_batches(texts: Sequence[str | list[int]], tokenizer, batch_size: int, mask_prob: float, seed: int,
                max_prompt_length: int = 256) -> Iterator[Batch]:
    """Endless masked batches (``input_ids``, ``attention_mask``, ``labels``), reshuffled every epoch.

    ``texts`` are strings (tokenised whole, cut at ``max_prompt_length``) or token ids from ``pcp_texts``.
    """
    from transformers import DataCollatorForLanguageModeling

    special = set(tokenizer.all_special_ids)
    features = []
    for text in texts:
        if not isinstance(text, list):
            text = tokenizer(text, truncation=True, max_length=max_prompt_length)["input_ids"]
        features.append({"input_ids": text, "special_tokens_mask": [int(t in special) for t in text]})
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask_prob, seed=seed)
    rng = random.Random(seed)
    while True:
        order = list(range(len(features)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = collator([features[j] for j in order[i:i + batch_size]])
            yield {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


def mlm_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens (0 with a graph if none was masked)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"].reshape(-1)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels, ignore_index=-100, reduction="sum")
    return ce / (labels != -100).sum().clamp_min(1)


def _checkpoint_keys(folder: Path) -> set[str] | None:
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    if (folder / "model.safetensors").is_file():
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            return set(f.keys())
    return None
