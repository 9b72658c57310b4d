"""A seconds-fast recipe for exercising the orchestration (Tune, Train, DeepSpeed, MLflow)
without a language model: a frozen random linear "base" plus a trainable low-rank delta,
fitted to a fixed target map. Used by tests and the platform-overhead benchmark.

Run it like any method: ``method: raypost.recipes.synthetic``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from raypost.batches import repeat_forever
from raypost.configs import check_range, field, split_flat
from raypost.recipes.base import Recipe, TrialSetup
from raypost.recipes.train_config import TrainConfig


@dataclass
class SyntheticConfig:
    dim: int = field(16, help="Input/output width of the linear map.")
    delta_rank: int = field(4, help="Rank of the trainable delta.")
    lr: float = field(0.05, help="Learning rate of the delta (0 never learns: ASHA's victim).")
    n_train: int = field(512, help="Training points.")
    tolerance: float = field(0.5, help="A prediction counts as accurate within this L2 distance.")
    crash_at_step: int = field(-1, help="Kill worker rank 1 once at this step (fault-tolerance tests).")
    crash_marker: str = field("", help="File recording that the crash happened (so it happens once).")

    def __post_init__(self):
        check_range("dim", self.dim, 1)
        check_range("delta_rank", self.delta_rank, 1)
        check_range("lr", self.lr, 0.0)


CONFIG_CLASSES = (TrainConfig, SyntheticConfig)


class DeltaLinear(nn.Module):
    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.base = nn.Linear(dim, dim)
        self.base.requires_grad_(False)
        self.down = nn.Parameter(torch.randn(dim, rank) / dim**0.5)
        self.up = nn.Parameter(torch.zeros(rank, dim))

    def forward(self, x):
        return self.base(x) + x @ self.down @ self.up


@torch.no_grad()
def _data(cfg: SyntheticConfig, base: nn.Linear, n: int, seed: int):
    """Targets are the base map plus a fixed low-rank delta: reachable, so accuracy can reach 1."""
    g = torch.Generator().manual_seed(1234)
    delta = torch.randn(cfg.dim, cfg.delta_rank, generator=g) @ torch.randn(cfg.delta_rank, cfg.dim, generator=g)
    x = torch.randn(n, cfg.dim, generator=torch.Generator().manual_seed(seed))
    return x, base(x) + x @ delta / cfg.dim


def setup(flat: dict, rank: int, world_size: int, *, resuming: bool = False, device=None) -> TrialSetup:
    train, cfg = split_flat(flat, *CONFIG_CLASSES)
    torch.manual_seed(0)  # identical base and init on every rank
    model = DeltaLinear(cfg.dim, cfg.delta_rank)
    x, y = _data(cfg, model.base, cfg.n_train, seed=1)
    ex, ey = _data(cfg, model.base, 256, seed=2)

    def epoch(e: int):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(train.seed + e))
        shard = order[rank::world_size]  # each rank sees its own slice
        for i in range(0, len(shard) - train.batch_size + 1, train.batch_size):
            idx = shard[i:i + train.batch_size]
            yield {"x": x[idx], "y": y[idx]}

    def compute_loss(engine, batch):
        step = getattr(engine, "global_steps", 0)
        if cfg.crash_at_step >= 0 and rank == 1 and step == cfg.crash_at_step and not _crashed(cfg):
            Path(cfg.crash_marker).write_text("crashed")
            os._exit(1)  # a hard worker death, as from a lost node or OOM kill
        return ((engine(batch["x"]) - batch["y"]) ** 2).mean()

    @torch.no_grad()
    def evaluate(module):
        err = (module(ex) - ey).norm(dim=1)
        return {"eval_accuracy": float((err < cfg.tolerance).float().mean()),
                "eval_loss": float((err**2).mean())}

    def save_adapter(module, directory: Path):
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({"down": module.down.detach().contiguous(), "up": module.up.detach().contiguous()},
                  str(directory / "adapter.safetensors"))

    return TrialSetup(
        model=model,
        param_groups=[{"name": "delta", "params": [model.down, model.up], "lr": cfg.lr}],
        train_batches=repeat_forever(epoch), compute_loss=compute_loss, evaluate=evaluate,
        save_adapter=save_adapter,
        params={"trainable_params": model.down.numel() + model.up.numel()})


def _crashed(cfg: SyntheticConfig) -> bool:
    return bool(cfg.crash_marker) and Path(cfg.crash_marker).exists()


RECIPE = Recipe(name="raypost.recipes.synthetic", config_classes=CONFIG_CLASSES, setup=setup,
                summary="a frozen linear map + trainable low-rank delta (orchestration tests and benchmarks)")
