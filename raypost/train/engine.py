"""The DeepSpeed engine of one worker: ``TrainConfig`` -> DeepSpeed config, optimizer groups and
the learning-rate schedule. Public: the trial loop and the benchmarks build exactly this engine.

Everything device-specific is derived from the resolved device, never assumed: on CUDA the
fused Adam kernel is used, on CPU torch's AdamW; fp16 is refused on CPU by ``TrainConfig``.

ZeRO-3 (``zero_stage: 3``) partitions the weights themselves, frozen base included; every
forward is then a collective. So every rank evaluates (equal shards, ``generate`` in lockstep:
``raypost.distributed.in_lockstep``) and every rank enters ``save_trainable``, which gathers the
trainable weights before rank 0 writes them (docs/orchestration.md, ZeRO-3).

The schedule is transformers' ``get_scheduler`` (linear warm-up, then constant, linear or cosine
decay) on the optimizer DeepSpeed builds: a ``LambdaLR`` scales each group's own peak lr, so
DePT's prompt and low-rank groups and a head keep their ratios. DeepSpeed steps it once per
optimizer step and saves it in every checkpoint, so a resumed trial continues the same curve.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Callable

import torch

from raypost import knobs
from raypost.distributed import whole_weights
from raypost.models import pick_device
from raypost.recipes.train_config import TrainConfig

SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}  # transformers' names


def resolve_device(name: str) -> torch.device:
    """``auto`` means the GPU Ray Train assigned to this worker when there is one."""
    device = pick_device(name)
    if device.type == "cuda":
        import ray.train.torch

        return ray.train.torch.get_device()
    return device


def deepspeed_config(cfg: TrainConfig, world_size: int, device: torch.device) -> dict:
    on_cpu = device.type == "cpu"
    offload = {"device": "cpu", "pin_memory": not on_cpu} if cfg.offload_optimizer else None
    zero = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero["stage3_param_persistence_threshold"] = cfg.zero3_persistence_threshold
    if offload:
        zero["offload_optimizer"] = offload
    config = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * world_size,
        # Each optimizer group keeps its own lr (DePT: prompt vs low-rank); this lr is the fallback.
        "optimizer": {"type": "AdamW", "params": {
            "lr": 1e-3, "weight_decay": cfg.weight_decay,
            # DeepSpeedCPUAdam when offloading, torch AdamW on plain CPU, fused Adam on GPU
            "torch_adam": on_cpu and not cfg.offload_optimizer}},
        "zero_optimization": zero,
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16"},
        "steps_per_print": 10**9,  # raypost logs its own metrics
        "wall_clock_breakdown": False,
    }
    return config


def make_scheduler(cfg: TrainConfig):
    """``optimizer -> LambdaLR``: ``cfg.lr_schedule`` after ``cfg.warmup`` warm-up steps, over
    ``cfg.steps`` optimizer steps (DeepSpeed calls it with the optimizer it built)."""
    from transformers import get_scheduler

    def build(optimizer):
        return get_scheduler(SCHEDULERS[cfg.lr_schedule], optimizer, num_warmup_steps=cfg.warmup,
                             num_training_steps=cfg.steps)

    return build


def _name_accelerator(device: torch.device) -> None:
    if device.type == "cpu":  # the config chose the CPU: say so rather than let DeepSpeed guess and warn
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


@contextlib.contextmanager
def partitioned_loading(cfg: TrainConfig, world_size: int, device: torch.device, enabled: bool = True):
    """At ZeRO-3, pretrained models loaded inside the block (``from_pretrained``) are built
    partitioned, by transformers' ``HfDeepSpeedConfig`` and DeepSpeed's ``zero.Init``: no worker
    ever holds a large base whole. Config-built models (``tiny:*``) are partitioned later, when
    DeepSpeed starts. A no-op at stages 0-2 or when not ``enabled``."""
    if cfg.zero_stage != 3 or not enabled:
        yield
        return
    _name_accelerator(device)
    from transformers.integrations import HfDeepSpeedConfig

    active = HfDeepSpeedConfig(deepspeed_config(cfg, world_size, device))  # transformers keeps a weak reference
    try:
        yield
    finally:
        del active  # later loads (e.g. an inference model in the same process) are whole again


def initialize_engine(model, param_groups, cfg: TrainConfig, world_size: int, device: torch.device):
    """``deepspeed.initialize`` with raypost's config and schedule; returns ``(engine, optimizer)``."""
    _name_accelerator(device)
    import deepspeed

    # DeepSpeed print()s "... shm_comm_op built successfully" (no logging switch); the console
    # shows it only with --verbose
    quiet = knobs.console() != "verbose"
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups,
                                                       config=deepspeed_config(cfg, world_size, device),
                                                       lr_scheduler=make_scheduler(cfg))
    return engine, optimizer


def build_worker(recipe, flat: dict, cfg: TrainConfig, rank: int, world_size: int, device: torch.device,
                 resuming: bool = False):
    """What every trial worker builds: the recipe's setup (a pretrained base loaded partitioned at
    ZeRO-3, unless the recipe opts out), then the DeepSpeed engine on its parameter groups.
    Returns ``(setup, engine, optimizer)``; the trial loop, the GPU check and the ZeRO-3 tests
    all build through here."""
    with partitioned_loading(cfg, world_size, device, enabled=recipe.loads_partitioned):
        setup = recipe.setup(flat, rank, world_size, resuming=resuming, device=device)
    engine, optimizer = initialize_engine(setup.model, setup.param_groups, cfg, world_size, device)
    return setup, engine, optimizer


def group_lrs(optimizer) -> dict[str, float]:
    """The current lr of each optimizer group, by the group's name (``lr_<name>`` in MLflow)."""
    return {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}


def save_trainable(engine, save: Callable[[torch.nn.Module, Path], None], directory: Path, rank: int) -> None:
    """``save(module, directory)`` on rank 0, with the trainable weights whole. Every rank calls
    it: under ZeRO-3 they are gathered from all ranks first (a collective; a full fine-tune
    gathers every weight), so the files are the same as at stages 0-2."""
    module = engine.module
    with whole_weights(module, [p for p in module.parameters() if p.requires_grad]):
        if rank == 0:
            save(module, directory)
