"""Translate ``TrainConfig`` into a DeepSpeed config dict.

Everything device-specific is derived from the resolved device, never assumed: on CUDA the
fused Adam kernel is used, on CPU torch's AdamW; fp16 is refused on CPU by TrainConfig.
"""

from __future__ import annotations

import torch

from raypost.train.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    """``auto`` means the GPU Ray Train assigned to this worker when there is one."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


def deepspeed_config(cfg: TrainConfig, world_size: int, device: torch.device) -> dict:
    on_cpu = device.type == "cpu"
    offload = {"device": "cpu", "pin_memory": not on_cpu} if cfg.offload_optimizer else None
    zero = {"stage": cfg.zero_stage}
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


def initialize_engine(model, param_groups, cfg: TrainConfig, world_size: int, device: torch.device):
    """``deepspeed.initialize`` with raypost's config; returns ``(engine, optimizer)``. One place for
    the trial loop and the benchmarks, so both build exactly the same engine."""
    import deepspeed

    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups,
                                                   config=deepspeed_config(cfg, world_size, device))
    return engine, optimizer
