"""The contract between the shared training loop and a method's recipe.

A recipe module ``raypost/recipes/<method>.py`` ends with one ``RECIPE = Recipe(...)``: its config
classes, ``setup`` (model, data, loss, evaluation for one worker), the metrics it reports, and,
where the method has them, ``check_point`` (limits of one point of a search space, run on the
driver before Ray starts) and ``load_predictor`` (inference from a saved adapter). The loop in
``raypost/train/_internal/loop.py`` does the rest (DeepSpeed, schedules, reporting, checkpoints,
MLflow), so a recipe reads top to bottom as "model, data, loss, eval".

Every saved adapter folder carries one ``raypost_adapter.json`` written from ``AdapterMeta``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from raypost.batches import Batch
from raypost.errors import DataError

ADAPTER_META = "raypost_adapter.json"  # what raypost.inference reads first in an adapter folder

# What the shared loop itself reports at every evaluation, for any recipe (objectives may name these too).
LOOP_METRICS = ("train_loss", "tokens_per_s", "train_s", "cpu_s", "peak_memory_mb", "replica_max_diff",
                "trainable_params")


@dataclass
class TrialSetup:
    model: nn.Module
    """The module DeepSpeed wraps. Base weights frozen; only adapter (and head) params train."""
    param_groups: list[dict[str, Any]]
    """Optimizer groups: ``{"name": str, "params": [...], "lr": float}``; one peak lr per group."""
    train_batches: Iterator[Batch]
    """Infinite iterator over this rank's micro-batches (already sharded by rank)."""
    compute_loss: Callable[[nn.Module, Batch], torch.Tensor]
    """Scalar loss of one batch (called with the DeepSpeed engine as the model)."""
    evaluate: Callable[[nn.Module], dict[str, float]]
    """Validation metrics (the recipe's ``metrics``). Called on every rank at once (an evaluator may
    shard the rows and gather); rank 0's result is reported."""
    save_adapter: Callable[[nn.Module, Path], None]
    """Write the trainable part only (never the base model) and its ``AdapterMeta`` to a folder."""
    params: dict[str, Any] = field(default_factory=dict)
    """Derived values to log as MLflow params, e.g. exact trainable-parameter count, m, r."""
    final_evaluate: Callable[[nn.Module, Path], dict[str, float]] | None = None
    """Optional end-of-trial evaluation writing tables/plots into a folder (StepGame per k)."""
    pre_metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    """Optional ``(step, {metric: value})`` computed in ``setup`` before the loop trains (e.g. PCP's
    stage-1 MLM loss curve); logged to MLflow once, before step 1 (not again on resume)."""


Setup = Callable[..., TrialSetup]
"""``setup(flat, rank, world_size, *, resuming=False, device=None) -> TrialSetup``. ``resuming`` is
True when the worker group restarts from a checkpoint (the loop then loads every trainable weight
from it, so setup-time work on the weights, like PCP's stage 1, can be skipped); ``device`` is the
worker's device (None: ``raypost.models.pick_device`` of the config's ``device``)."""


@dataclass(frozen=True)
class Recipe:
    """One post-training method as the CLI, ``raypost.tune`` and ``raypost.train`` see it."""

    name: str
    config_classes: tuple[type, ...]
    """Dataclasses the flat trial-config keys belong to (``split_flat``); keys are unique across them."""
    setup: Setup
    metrics: tuple[str, ...] = ("eval_accuracy", "eval_loss")
    """What ``evaluate`` reports; a space's objectives must name one of these or ``LOOP_METRICS``."""
    check_point: Callable[[dict], None] | None = None
    """Method limits at one point of a space (a flat config); raises ``ConfigError``. Called for
    every combination of range ends by ``raypost.tune.space.check_space``."""
    prepare_fixed: Callable[[dict, dict], None] | None = None
    """Once per space, before the points: check and rewrite ``fixed`` in place (e.g. data paths
    made absolute, as trial workers may run in another directory). Arguments: fixed, search."""
    load_predictor: Callable[..., Any] | None = None
    """``load_predictor(adapter_dir, meta, model=None, batch_size=32)``: a StepGame predictor."""
    task_format: int = 1
    """The prompt format adapters of this method learnt; bump it when prompts or answers change, and
    older adapters are refused instead of answering garbage."""
    summary: str = ""
    loads_partitioned: bool = True
    """Under ZeRO-3, ``setup`` runs with transformers' ZeRO-3 loading on, so a pretrained base is
    partitioned as it loads (no worker holds it whole). False for a recipe whose setup computes
    with the whole model itself (PCP's stage 1): its model is partitioned when DeepSpeed starts."""

    def reported_metrics(self) -> tuple[str, ...]:
        return tuple(self.metrics) + LOOP_METRICS

    def resolved(self, flat: dict) -> dict:
        """Every hyperparameter of a flat trial config with its default filled in (ZeRO stage,
        precision, schedule, ...): what a trial logs as MLflow params."""
        from raypost.configs import split_flat

        return {f.name: getattr(obj, f.name) for obj in split_flat(flat, *self.config_classes)
                for f in dataclasses.fields(obj)}


@dataclass
class AdapterMeta:
    """``raypost_adapter.json``: the one schema of every saved adapter. ``settings`` holds what the
    method needs to rebuild its model (prompt format, max length, template, ...); it is written
    flat beside the common fields."""

    method: str
    """A registered method name (never a module path: a folder must not choose code to import)."""
    model: str
    kind: str
    trainable_params: int
    task: str = "stepgame"
    task_format: int = 1
    labels: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "settings"}
        path = directory / ADAPTER_META
        path.write_text(json.dumps({**data, **self.settings}, indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> AdapterMeta:
        path = Path(directory) / ADAPTER_META
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read the adapter description ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: the adapter description must be a JSON object")
        for key in ("method", "model", "kind"):
            if not isinstance(data.get(key), str):
                raise DataError(f"{path}: missing field {key!r}")
        common = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        known = {k: v for k, v in data.items() if k in common}
        known.setdefault("trainable_params", 0)
        return cls(**known, settings={k: v for k, v in data.items() if k not in common})

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


def save_whole_model(model, directory: Path) -> None:
    """A transformers model's every weight, under the module's own names: transformers would
    otherwise revert the renames it recorded at load time, and records different ones when the
    model was loaded partitioned (ZeRO-3), naming the same weights differently per stage."""
    model.save_pretrained(directory, safe_serialization=True, save_original_format=False)


def trainable_count(model: nn.Module) -> int:
    """Trainable elements; a weight ZeRO-3 partitioned at load counts whole (``ds_numel``)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
