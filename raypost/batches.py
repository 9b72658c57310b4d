"""Batches and epochs: the data plumbing every task and recipe shares (torch only).

A batch is a dict of tensors. ``sharded_batches`` gives each rank its own micro-batches forever,
reshuffling every epoch; ``weights_fingerprint`` tells whether trainable weights changed (by
content), so evaluators can reuse predictions.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from raypost.errors import DataError

Batch = dict[str, torch.Tensor]


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
    By content, not tensor versions: DeepSpeed writes through ``param.data``. Under ZeRO-3, of
    this rank's slice of each (``ds_tensor``): the fingerprints of two ranks then differ."""
    sums = []
    for p in module.parameters():
        if p.requires_grad:
            t = getattr(p, "ds_tensor", p).detach().double()
            sums += [float(t.sum()), float(t.square().sum())]
    return tuple(sums)
