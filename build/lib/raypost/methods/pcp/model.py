"""Stage 2: prompt-based fine-tuning. The MLM head, read at the mask slot, restricted to label words."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from raypost.errors import DataError
from raypost.methods.pcp.template import PromptTemplate, Verbalizer, make_verbalizer


class PromptMLMClassifier(nn.Module):
    """``logits[b, i]`` = MLM logit of label word i at row b's mask position (a classifier with no new head)."""

    def __init__(self, mlm_model: nn.Module, tokenizer, template: PromptTemplate | str,
                 verbalizer: Verbalizer | dict[str, str] | str = "stepgame", max_prompt_length: int = 256):
        super().__init__()
        self.mlm = mlm_model
        self.tokenizer = tokenizer
        self.template = template if isinstance(template, PromptTemplate) else PromptTemplate(template)
        self.verbalizer = verbalizer if isinstance(verbalizer, Verbalizer) else make_verbalizer(verbalizer, tokenizer)
        self.max_prompt_length = max_prompt_length
        self.register_buffer("label_word_ids", torch.tensor(self.verbalizer.word_ids), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                mask_positions: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        if mask_positions is None:
            mask_positions = self._find_masks(input_ids)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        head = getattr(self.mlm, "cls", None)  # BERT-style: run the head on the mask positions only
        if head is not None:
            hidden = self.mlm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            vocab_logits = head(hidden[rows, mask_positions])
        else:
            vocab_logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits[rows, mask_positions]
        logits = vocab_logits[:, self.label_word_ids]
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _find_masks(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_mask = input_ids == self.tokenizer.mask_token_id
        if not bool((is_mask.sum(-1) == 1).all()):
            raise DataError("every input needs exactly one mask token; pass mask_positions")
        return is_mask.int().argmax(-1)
