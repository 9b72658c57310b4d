"""The contract between the shared training loop and a method's recipe.

A recipe module ``raypost/recipes/<method>.py`` exposes::

    CONFIG_CLASSES = (TrainConfig, <MethodConfig>, <DataConfig>, ...)
    def setup(cfg: dict, rank: int, world_size: int) -> TrialSetup

and the loop in ``raypost/train/_internal/loop.py`` does the rest (DeepSpeed, reporting,
checkpoints, MLflow metrics), so a recipe reads top to bottom as "model, data, loss, eval".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


@dataclass
class TrialSetup:
    model: nn.Module
    """The module DeepSpeed wraps. Base weights frozen; only adapter (and head) params train."""
    param_groups: list[dict[str, Any]]
    """Optimizer groups: ``{"name": str, "params": [...], "lr": float}``; one lr per group."""
    train_batches: Iterator[Batch]
    """Infinite iterator over this rank's micro-batches (already sharded by rank)."""
    compute_loss: Callable[[nn.Module, Batch], torch.Tensor]
    """Scalar loss of one batch (called with the DeepSpeed engine as the model)."""
    evaluate: Callable[[nn.Module], dict[str, float]]
    """Validation metrics; must include the trial's ``metric``. Called on rank 0 only."""
    save_adapter: Callable[[nn.Module, Path], None]
    """Write the trainable part only (never the base model) to a folder."""
    params: dict[str, Any] = field(default_factory=dict)
    """Derived values to log as MLflow params, e.g. exact trainable-parameter count, m, r."""
    final_evaluate: Callable[[nn.Module, Path], dict[str, float]] | None = None
    """Optional end-of-trial evaluation writing tables/plots into a folder (StepGame per k)."""
    pre_metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    """Optional ``(step, {metric: value})`` computed in ``setup`` before the loop trains (e.g. PCP's
    stage-1 MLM loss curve); logged to MLflow once, before step 1 (not again on resume)."""


def count_tokens(batch: Batch) -> int:
    """Non-padding input tokens of a batch (for throughput); rows for non-text batches."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if "input_ids" in batch:
        return int(batch["input_ids"].numel())
    return len(next(iter(batch.values())))


def repeat_forever(make_epoch: Callable[[int], Iterator[Batch]]) -> Iterator[Batch]:
    """Cycle epochs (``make_epoch(epoch)`` reshuffles with the epoch as seed)."""
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
