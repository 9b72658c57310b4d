"""The contract between the shared training loop and a method's recipe.

A recipe module ``raypost/recipes/<method>.py`` exposes::

    CONFIG_CLASSES = (TrainConfig, <MethodConfig>, <DataConfig>, ...)
    def setup(cfg: dict, rank: int, world_size: int, *, resuming: bool = False) -> TrialSetup

and the loop in ``raypost/train/_internal/loop.py`` does the rest (DeepSpeed, reporting,
checkpoints, MLflow metrics), so a recipe reads top to bottom as "model, data, loss, eval".

``resuming`` is True when the worker group restarts from a Ray Train checkpoint: the loop will
load every trainable weight from it, so work ``setup`` does on the weights before training (PCP's
stage 1) can be skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from raypost.errors import DataError

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


def sharded_batches(examples: Sequence, make_batch: Callable[[list], Batch], batch_size: int, rank: int,
                    world_size: int, seed: int, what: str = "training examples", hint: str = "") -> Iterator[Batch]:
    """This rank's micro-batches forever: each epoch reshuffles (seed + epoch), then rank r takes
    examples r, r + world, ... (full batches only), so ranks never share an example within an epoch."""
    import random

    if len(examples) < batch_size * world_size:
        raise DataError(f"{len(examples)} {what} cannot fill batch_size={batch_size} on {world_size} workers; "
                        f"{hint or 'add examples'} or lower batch_size")

    def epoch(e: int):
        order = list(range(len(examples)))
        random.Random(f"{seed}:{e}").shuffle(order)
        shard = order[rank::world_size]
        for i in range(0, len(shard) - batch_size + 1, batch_size):
            yield make_batch([examples[j] for j in shard[i:i + batch_size]])

    return repeat_forever(epoch)


@torch.no_grad()
def weights_fingerprint(module: nn.Module) -> tuple[float, ...]:
    """Sum and sum of squares of every trainable tensor: unchanged weights, same predictions.
    By content, not tensor versions: DeepSpeed writes through ``param.data``."""
    sums = []
    for p in module.parameters():
        if p.requires_grad:
            t = p.detach().double()
            sums += [float(t.sum()), float(t.square().sum())]
    return tuple(sums)
