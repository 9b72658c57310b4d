"""The IM loss: token-weighted cross-entropy, normalised by the total weight of the batch.

    loss = sum_t w_t * ce_t / sum_t w_t,   w_t = 1 (output), lambda (instruction), 0 (template, padding)

With N_O, N_I output/instruction tokens and mean CEs L_O, L_I, this is
``(N_O * L_O + lambda * N_I * L_I) / (N_O + lambda * N_I)``: lambda = 0 is the output-only mean,
lambda = 1 the mean over all non-template tokens, and in between a weighted mean of L_O and L_I.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raypost.methods.im.collate import Batch, collate
from raypost.methods.im.template import Encoded


def weighted_ce_sums(logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor,
                     shift: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_t w_t * ce_t, sum_t w_t); ``shift`` makes position t predict label t+1 (causal LMs)."""
    if shift:
        logits, labels, loss_weights = logits[:, :-1], labels[:, 1:], loss_weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                         ignore_index=-100, reduction="none")
    w = loss_weights.reshape(-1).float() * (labels.reshape(-1) != -100)
    return (w * ce).sum(), w.sum()


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor,
                     shift: bool = True) -> torch.Tensor:
    num, den = weighted_ce_sums(logits, labels, loss_weights, shift)
    return num / den.clamp_min(1e-8)  # an all-zero-weight batch gives 0 (with a graph), not NaN


def model_logits(model: nn.Module, batch: Batch, kind: str = "causal", hf_config=None) -> torch.Tensor:
    """Logits aligned with ``batch["labels"]``. ``hf_config``: the HF model's config, for models
    whose ``.config`` is something else (a DeepSpeed engine's is its own)."""
    if kind == "seq2seq":
        config = hf_config or getattr(model, "config", None) or model.base.config  # DeptModel: HF model as .base
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=decoder_inputs(config, batch["labels"]))
    else:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits if hasattr(out, "logits") else out
    return logits[:, -batch["labels"].shape[1]:]  # drop positions of prepended soft prompts, if any


def im_loss(model: nn.Module, batch: Batch, kind: str = "causal", hf_config=None) -> torch.Tensor:
    """The training loss of one collated batch (``compute_loss`` of the recipe)."""
    return weighted_lm_loss(model_logits(model, batch, kind, hf_config), batch["labels"], batch["loss_weights"],
                            shift=kind != "seq2seq")


@torch.no_grad()
def output_only_loss(model: nn.Module, rows: list[Encoded], pad_token_id: int, batch_size: int = 8,
                     kind: str = "causal") -> float:
    """Held-out loss on output tokens only (lambda = 0), averaged over all output tokens of ``rows``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    num = den = 0.0
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate(rows[i:i + batch_size], pad_token_id, 0.0, kind).items()}
        n, d = weighted_ce_sums(model_logits(model, batch, kind), batch["labels"], batch["loss_weights"],
                                shift=kind != "seq2seq")
        num, den = num + float(n), den + float(d)
    model.train(was_training)
    return num / max(den, 1e-8)


def decoder_inputs(config, labels: torch.Tensor) -> torch.Tensor:
    """Teacher forcing: the decoder start token, then the labels shifted right (padding for -100)."""
    dec = labels.new_full(labels.shape, config.pad_token_id)
    dec[:, 1:] = labels[:, :-1]
    dec[:, 0] = config.decoder_start_token_id
    return dec.masked_fill(dec == -100, config.pad_token_id)
