"""Full fine-tuning on StepGame: every weight of the base model trains. The reference the
parameter-efficient methods are measured against (docs/results, experiment 4).

Same task as DePT (``StepgameTask``: data, sharding, loss, evaluation, the final per-k
evaluation) and the same model kinds: an encoder gets a fresh 9-way head on [CLS]
(``classifier``), encoder-decoders and decoders generate the label word. One learning rate for
every weight. DeepSpeed ZeRO (``zero_stage``) shards the optimizer state, which here is the whole
model's. The saved "adapter" is the whole model and its tokenizer (``save_pretrained``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raypost.configs import check, check_range, field, split_flat
from raypost.errors import ConfigError
from raypost.recipes.base import AdapterMeta, Recipe, TrialSetup, save_whole_model, trainable_count
from raypost.recipes.dept import DeptTaskConfig, resolve_kind
from raypost.recipes.train_config import TrainConfig
from raypost.stepgame.labels import LABELS
from raypost.stepgame.task import TASK_FORMAT, StepgameDataConfig, StepgamePredictor, StepgameTask, resolve_data_paths


@dataclass
class FinetuneConfig:
    ft_lr: float = field(2e-5, help="Learning rate of every weight (the base model and, for encoders, the head).")
    max_input_length: int = field(256, help="Max input tokens; longer stories are cut from the start.")

    def __post_init__(self):
        check(self.ft_lr > 0, f"ft_lr={self.ft_lr} must be positive")
        check_range("max_input_length", self.max_input_length, 8)


CONFIG_CLASSES = (TrainConfig, FinetuneConfig, StepgameDataConfig, DeptTaskConfig)


def build_model(model: str, kind: str, seed: int = 0):
    """``(HF model with every weight trainable, tokenizer)``; encoders get a seeded 9-way head."""
    from raypost.models import load_base
    from raypost.stepgame.labels import ID2LABEL, LABEL2ID

    base = load_base(model, kind, num_labels=len(LABELS) if kind == "classifier" else None, seed=seed)
    if kind == "classifier":
        base.model.config.id2label, base.model.config.label2id = dict(ID2LABEL), dict(LABEL2ID)
    base.model.requires_grad_(True)
    return base.model, base.tokenizer


def setup(flat: dict, rank: int, world_size: int, *, resuming: bool = False, device=None) -> TrialSetup:
    train, ft, data_cfg, task_cfg = split_flat(flat, *CONFIG_CLASSES)
    kind = resolve_kind(train.model, task_cfg.model_kind)
    model, tokenizer = build_model(train.model, kind, seed=train.seed)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and ft.max_input_length > positions:
        raise ConfigError(f"max_input_length={ft.max_input_length} exceeds model {train.model!r}'s "
                          f"{positions} positions")
    task = StepgameTask(data_cfg, tokenizer, kind, ft.max_input_length, batch_size=train.batch_size,
                        rank=rank, world_size=world_size, seed=train.seed)
    count = trainable_count(model)

    def save_adapter(module, directory: Path) -> None:
        directory = Path(directory)
        save_whole_model(module, directory)
        tokenizer.save_pretrained(directory)
        AdapterMeta("finetune", train.model, kind, count, task_format=TASK_FORMAT, labels=list(LABELS),
                    settings={"max_input_length": ft.max_input_length,
                              "weights": "full model (save_pretrained) + tokenizer"}).write(directory)

    return TrialSetup(
        model=model, param_groups=[{"params": [p for p in model.parameters() if p.requires_grad],
                                    "lr": ft.ft_lr, "name": "all"}],
        train_batches=task.batches, compute_loss=task.compute_loss, evaluate=task.evaluate,
        save_adapter=save_adapter, final_evaluate=task.final_evaluate,
        params={"trainable_params": count, "finetune_kind": kind, **task.params})


def load_predictor(adapter_dir, meta: AdapterMeta, model: str | None = None,
                   batch_size: int = 32) -> StepgamePredictor:
    """A predictor from a saved fine-tuned model folder (the folder is the model)."""
    from raypost.models import load_base, pick_device

    kind = meta.kind
    base = load_base(str(adapter_dir), kind, num_labels=len(LABELS) if kind == "classifier" else None)
    return StepgamePredictor(base.model.eval().to(pick_device()), base.tokenizer, kind, meta.get("max_input_length"),
                             batch_size=batch_size)


RECIPE = Recipe(task_format=TASK_FORMAT, name="finetune", config_classes=CONFIG_CLASSES, setup=setup,
                prepare_fixed=lambda fixed, search: resolve_data_paths(fixed), load_predictor=load_predictor,
                summary="full fine-tuning: every weight trains (the reference)")

__all__ = ["RECIPE", "CONFIG_CLASSES", "FinetuneConfig", "setup", "load_predictor", "build_model"]
