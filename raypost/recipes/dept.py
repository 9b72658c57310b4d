"""DePT on StepGame: a frozen base model + soft prompt P + low-rank offset A @ B (+ a 9-way head
for encoders), trained by the shared DeepSpeed loop. See docs/dept.md for the method.

Model: ``load_base(model, kind)`` -> ``DeptModel``; optimizer groups prompt / lowrank / head,
each with its own learning rate. Data: ``StepgameTask`` (generated or official files), sharded by
rank. Loss: the base model's own (cross-entropy over labels or answer tokens). Eval: accuracy on
the eval set; at the end, accuracy per k / hops written as tables and a plot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from raypost.configs import check, check_choice, field, split_flat
from raypost.errors import ConfigError
from raypost.methods.dept import DeptConfig, DeptModel
from raypost.recipes.base import TrialSetup
from raypost.recipes.stepgame_task import (KINDS, TASK_FORMAT, StepgameDataConfig, StepgamePredictor, StepgameTask,
                                           resolve_data_paths)
from raypost.stepgame.labels import LABELS
from raypost.train.config import TrainConfig

ADAPTER_META = "raypost_adapter.json"  # what raypost.inference.load_predictor reads first
MAX_SPACE_COMBINATIONS = 4096  # check_space tries every combination of range ends up to this many


@dataclass
class DeptTaskConfig:
    model_kind: str = field("auto", help="How the model answers: classifier (9-way head), seq2seq or causal "
                                         "(generate the label word); auto = classifier for encoders, "
                                         "seq2seq for encoder-decoders, causal for decoders.")

    def __post_init__(self):
        check_choice("model_kind", self.model_kind, ("auto", *KINDS))


CONFIG_CLASSES = (TrainConfig, DeptConfig, StepgameDataConfig, DeptTaskConfig)


def resolve_kind(model: str, model_kind: str) -> str:
    if model_kind != "auto":
        return model_kind
    from raypost.models.dims import default_kind

    kind = default_kind(model)
    if kind not in KINDS:  # pragma: no cover - default_kind only returns StepGame kinds
        raise ConfigError(f"model {model!r} is of kind {kind!r}; set model_kind to one of {', '.join(KINDS)}")
    return kind


def build_model(model: str, kind: str, config: DeptConfig, seed: int = 0):
    """``(DeptModel, tokenizer)``: the base model of ``kind`` (classifiers get a fresh, seeded
    9-way head) wrapped in DePT."""
    from raypost.models import load_base
    from raypost.stepgame.labels import ID2LABEL, LABEL2ID

    base = load_base(model, kind, num_labels=len(LABELS) if kind == "classifier" else None, seed=seed)
    if kind == "classifier":  # saved configs and HF pipelines then name the labels
        base.model.config.id2label, base.model.config.label2id = dict(ID2LABEL), dict(LABEL2ID)
    return DeptModel(base, config), base.tokenizer


def setup(flat: dict, rank: int, world_size: int, *, resuming: bool = False) -> TrialSetup:
    train, dept_cfg, data_cfg, task_cfg = split_flat(flat, *CONFIG_CLASSES)
    kind = resolve_kind(train.model, task_cfg.model_kind)
    # load_base seeds the head and DeptModel seeds P and A (adapter_init_seed): identical on every rank
    model, tokenizer = build_model(train.model, kind, dept_cfg, seed=train.seed)
    task = StepgameTask(data_cfg, tokenizer, kind, model.max_input_length, batch_size=train.batch_size,
                        rank=rank, world_size=world_size, seed=train.seed)
    dept_count = model.trainable_parameter_count()

    def save_adapter(module: DeptModel, directory: Path) -> None:
        module.save_adapter(directory)
        meta = {"method": "dept", "model": train.model, "kind": kind, "task": "stepgame",
                "task_format": TASK_FORMAT, "labels": list(LABELS), "max_input_length": module.max_input_length,
                "trainable_params": dept_count + module.head_parameter_count()}
        (Path(directory) / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n")

    return TrialSetup(
        model=model, param_groups=model.param_groups(), train_batches=task.batches,
        compute_loss=task.compute_loss, evaluate=task.evaluate, save_adapter=save_adapter,
        final_evaluate=task.final_evaluate,
        params={"trainable_params": dept_count + model.head_parameter_count(), **model.summary(),
                "dept_budget": dept_cfg.param_budget if dept_cfg.param_budget is not None else dept_count,
                "dept_kind": kind, **task.params})


# ---- search-space limits, checked on the driver before any trial starts ------------------------
def check_space(fixed: dict, search: dict) -> None:
    """DePT's limits over every value the space allows: each combination of range ends and
    categorical values must build valid configs, and with ``param_budget`` set every
    ``prompt_length`` must fit the budget at the model's hidden size d. Relative data paths in
    ``fixed`` become absolute (trial workers may run in another directory)."""
    from raypost.models.dims import hidden_size, max_positions
    from raypost.tune.space import space_bounds, space_points

    resolve_data_paths(fixed)
    for key, minimum in (("prompt_length", 0), ("lowrank_rank", 0), ("param_budget", 1), ("max_input_length", 1)):
        for value in space_bounds(search, key, {}, None) if key in search else ():
            check(isinstance(value, (int, float)) and value >= minimum,
                  f"search.{key}: {value!r} is below its minimum {minimum}")
    has = lambda k: k in search or fixed.get(k) is not None  # noqa: E731
    check(not (has("param_budget") and has("lowrank_rank")),
          "param_budget and lowrank_rank are both set (fixed or searched); with param_budget, "
          "lowrank_rank follows from prompt_length: search prompt_length instead")

    dims: dict[str, tuple[int, int | None]] = {}
    for point, where in space_points(search, fixed, limit=MAX_SPACE_COMBINATIONS):
        flat = {**fixed, **point}
        try:
            train, dept_cfg, _, _ = split_flat(flat, *CONFIG_CLASSES)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (at {where})") from None
        model, m, s = train.model, dept_cfg.prompt_length, dept_cfg.max_input_length
        if model not in dims:
            dims[model] = (hidden_size(model), max_positions(model))
        d, positions = dims[model]
        if positions is not None and m + s > positions:
            raise ConfigError(f"prompt_length + max_input_length = {m} + {s} = {m + s} exceeds the {positions} "
                              f"positions of {model!r} (the prompt takes m of them) (at {where})")
        if dept_cfg.param_budget is None:
            continue
        budget = dept_cfg.param_budget
        if m * d > budget:
            raise ConfigError(
                f"prompt_length={m} does not fit param_budget={budget}: the prompt alone is m x d = "
                f"{m} x {d} = {m * d} at hidden size d={d} of {model!r}; keep prompt_length <= {budget // d} "
                f"or raise param_budget (at {where})")
        if m == 0 and budget < s + d:
            raise ConfigError(
                f"prompt_length=0 with param_budget={budget} trains nothing: one rank of the low-rank pair "
                f"costs s + d = {s} + {d} = {s + d}; raise param_budget or prompt_length (at {where})")


# ---- inference -----------------------------------------------------------------------------
def load_predictor(adapter_dir, model: str | None = None, batch_size: int = 32) -> StepgamePredictor:
    """A predictor from a saved adapter folder, on its recorded base model (or ``model``)."""
    from raypost.models import load_base

    directory = Path(adapter_dir)
    meta = json.loads((directory / ADAPTER_META).read_text())
    kind = meta["kind"]
    if meta.get("task_format", TASK_FORMAT) != TASK_FORMAT:
        raise ConfigError(f"{directory}: adapter learnt StepGame prompt format {meta['task_format']}, this "
                          f"raypost writes format {TASK_FORMAT}")
    base = load_base(model or meta["model"], kind, num_labels=len(LABELS) if kind == "classifier" else None)
    dept = DeptModel.load_adapter(base, directory).eval()
    device = _inference_device()
    return StepgamePredictor(dept.to(device), base.tokenizer, kind, dept.max_input_length, batch_size=batch_size)


def _inference_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["CONFIG_CLASSES", "DeptTaskConfig", "setup", "check_space", "load_predictor", "build_model",
           "resolve_kind", "ADAPTER_META"]
