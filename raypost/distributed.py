"""The collectives a data-parallel worker needs, in one home: the shared loop's metrics and
replica check, PCP's stage 1 (a plain-torch data-parallel loop before DeepSpeed starts) and the
sharded StepGame evaluation. Each is a no-op at world size 1; CUDA tensors on NCCL, CPU tensors
on gloo. Plain ``torch.distributed`` (Ray Train sets the group up), so it sits low enough for the
loop, the recipes and the StepGame evaluator to share it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist


def is_partitioned(module: torch.nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions ``module``'s weights: each rank then holds a slice of
    each, and every forward pass is a collective that all ranks must take part in."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def in_lockstep(module: torch.nn.Module) -> bool:
    """ZeRO-3 across more than one rank: forward passes (and ``generate``'s steps) must match in
    number on every rank, as each one gathers the weights from all of them."""
    return is_partitioned(module) and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def whole_weights(module: torch.nn.Module, params: list | None = None):
    """Inside the block every rank holds the whole of ``params`` (default: all of ``module``'s
    weights), read-only. Under ZeRO-3 a collective that every rank must enter (DeepSpeed's
    ``GatheredParameters``); otherwise the weights are whole already and this does nothing."""
    if not is_partitioned(module):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()) if params is None else list(params)):
        yield


def for_backend(tensor: torch.Tensor) -> torch.Tensor:
    """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
    on_nccl = dist.is_initialized() and dist.get_backend() == "nccl"
    return tensor.cuda() if on_nccl else tensor.cpu()


def mean_across_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = for_backend(value.detach().clone())
        dist.all_reduce(value)
        value /= world
    return float(value)


def sum_across_ranks(value: int, world: int) -> int:
    if world == 1:
        return value
    tensor = for_backend(torch.tensor([value], dtype=torch.long))
    dist.all_reduce(tensor)
    return int(tensor)


def broadcast(obj: Any, world: int, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, world: int) -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if world == 1:
        return [obj]
    out: list = [None] * world
    dist.all_gather_object(out, obj)
    return out


def gather_sharded(values: list[int], n: int, world_size: int) -> list[int]:
    """The full list of ``n`` ints from every rank's shard ``values`` (items r, r + world, ...),
    identical on every rank: one ``all_gather`` of the shards padded to equal length."""
    if world_size == 1:
        return list(values)
    width = -(-n // world_size)
    local = torch.full((width,), -1, dtype=torch.long)
    local[:len(values)] = torch.tensor(values, dtype=torch.long)
    local = for_backend(local)
    gathered = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(gathered, local)
    # gathered[r][j] is item r + j * world: reading the (world, width) stack column by column restores the order
    return torch.stack(gathered).T.reshape(-1)[:n].tolist()


@torch.no_grad()
def replica_max_diff(module: torch.nn.Module, world: int, trainable_only: bool = True) -> float:
    """Largest difference between ranks of a checksum of the (trainable) weights: 0 means the
    replicas are in sync. Under ZeRO-3 there are no replicas (each rank owns a distinct slice of
    every weight), so there is nothing to compare: 0."""
    if is_partitioned(module):
        return 0.0
    params = [p.detach().double() for p in module.parameters() if p.requires_grad or not trainable_only]
    local = for_backend(torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)]))
    if world == 1:
        return 0.0
    gathered = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    stacked = torch.stack(gathered)
    return float((stacked.max(0).values - stacked.min(0).values).max())


def sharded_adamw(model, loss_fn: Callable[[dict], torch.Tensor], batches: Iterator[dict], steps: int, lr: float, *,
                  weight_decay: float, max_grad_norm: float, world_size: int, device: torch.device,
                  what: str = "stage 1") -> list[float]:
    """``steps`` plain-torch AdamW steps on ``loss_fn(batch)`` for this rank's ``batches``, training
    ``model``'s trainable weights. With world_size > 1, each step's gradients (and loss, for logging)
    are averaged over the ranks with one ``all_reduce``, so every rank applies the same update.
    Returns the mean loss per step. For work a recipe does in ``setup`` before DeepSpeed starts."""
    distributed = world_size > 1
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{what} on {world_size} workers needs torch.distributed initialised (Ray Train does "
                           "this before the training loop starts)")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    for _ in range(steps):
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if distributed:
            flat = for_backend(torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)]))
            dist.all_reduce(flat)
            flat = (flat / world_size).to(device)
            offset = 0
            for p, g in zip(params, grads):
                p.grad = flat[offset:offset + g.numel()].view_as(p).clone()
                offset += g.numel()
            losses.append(float(flat[-1]))
        else:
            for p, g in zip(params, grads):
                p.grad = g
            losses.append(float(loss.detach()))
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return losses
