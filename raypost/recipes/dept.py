"""DePT on StepGame: a frozen base model + soft prompt P + low-rank offset A @ B (+ a 9-way head
for encoders), trained by the shared DeepSpeed loop. See docs/dept.md for the method.

Model: ``load_base(model, kind)`` -> ``DeptModel``; optimizer groups prompt / lowrank / head,
each with its own learning rate. Data: ``StepgameTask`` (generated or official files), sharded by
rank. Loss: the base model's own (cross-entropy over labels or answer tokens). Eval: accuracy on
the eval set; at the end, accuracy per k / hops written as tables and a plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raypost.configs import check, check_choice, field, split_flat
from raypost.errors import ConfigError
from raypost.methods.dept import DeptConfig, DeptModel, check_readout
from raypost.recipes.base import AdapterMeta, Recipe, TrialSetup
from raypost.recipes.train_config import TrainConfig
from raypost.stepgame.labels import LABELS
from raypost.stepgame.task import (
    KINDS,
    TASK_FORMAT,
    StepgameDataConfig,
    StepgamePredictor,
    StepgameTask,
    resolve_data_paths,
)


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


def setup(flat: dict, rank: int, world_size: int, *, resuming: bool = False, device=None) -> TrialSetup:
    train, dept_cfg, data_cfg, task_cfg = split_flat(flat, *CONFIG_CLASSES)
    kind = resolve_kind(train.model, task_cfg.model_kind)
    # load_base seeds the head and DeptModel seeds P and A (adapter_init_seed): identical on every rank
    model, tokenizer = build_model(train.model, kind, dept_cfg, seed=train.seed)
    task = StepgameTask(data_cfg, tokenizer, kind, model.max_input_length, batch_size=train.batch_size,
                        rank=rank, world_size=world_size, seed=train.seed)
    dept_count = model.trainable_parameter_count()

    def save_adapter(module: DeptModel, directory: Path) -> None:
        module.save_adapter(directory)
        AdapterMeta("dept", train.model, kind, dept_count + module.head_parameter_count(), task_format=TASK_FORMAT,
                    labels=list(LABELS), settings={"max_input_length": module.max_input_length}).write(directory)

    return TrialSetup(
        model=model, param_groups=model.param_groups(), train_batches=task.batches,
        compute_loss=task.compute_loss, evaluate=task.evaluate, save_adapter=save_adapter,
        final_evaluate=task.final_evaluate,
        params={"trainable_params": dept_count + model.head_parameter_count(), **model.summary(),
                "dept_budget": dept_cfg.param_budget if dept_cfg.param_budget is not None else dept_count,
                "dept_kind": kind, **task.params})


# ---- search-space limits, checked on the driver before any trial starts ------------------------
def prepare_fixed(fixed: dict, search: dict) -> None:
    """Relative data paths in ``fixed`` become absolute (trial workers may run in another
    directory); ``param_budget`` and ``lowrank_rank`` are not both set."""
    resolve_data_paths(fixed)
    has = lambda k: k in search or fixed.get(k) is not None  # noqa: E731
    check(not (has("param_budget") and has("lowrank_rank")),
          "param_budget and lowrank_rank are both set (fixed or searched); with param_budget, "
          "lowrank_rank follows from prompt_length: search prompt_length instead")


def check_point(flat: dict) -> None:
    """DePT's limits at one point of a space: m + s fits the model's positions, and with
    ``param_budget`` set the prompt fits the budget at the model's hidden size d."""
    from raypost.models.dims import hidden_size, max_positions

    train, dept_cfg, _, task_cfg = split_flat(flat, *CONFIG_CLASSES)
    model, m, s = train.model, dept_cfg.prompt_length, dept_cfg.max_input_length
    check_readout(dept_cfg.readout, resolve_kind(model, task_cfg.model_kind), model)
    positions = max_positions(model)
    if positions is not None and m + s > positions:
        raise ConfigError(f"prompt_length + max_input_length = {m} + {s} = {m + s} exceeds the {positions} "
                          f"positions of {model!r} (the prompt takes m of them)")
    if dept_cfg.param_budget is None:
        return
    budget, d = dept_cfg.param_budget, hidden_size(model)
    if m * d > budget:
        raise ConfigError(
            f"prompt_length={m} does not fit param_budget={budget}: the prompt alone is m x d = "
            f"{m} x {d} = {m * d} at hidden size d={d} of {model!r}; keep prompt_length <= {budget // d} "
            f"or raise param_budget")
    if m == 0 and budget < s + d:
        raise ConfigError(
            f"prompt_length=0 with param_budget={budget} trains nothing: one rank of the low-rank pair "
            f"costs s + d = {s} + {d} = {s + d}; raise param_budget or prompt_length")


# ---- inference -----------------------------------------------------------------------------
def load_predictor(adapter_dir, meta: AdapterMeta, model: str | None = None,
                   batch_size: int = 32) -> StepgamePredictor:
    """A predictor from a saved adapter folder, on its recorded base model (or ``model``)."""
    from raypost.models import load_base, pick_device

    kind = meta.kind
    base = load_base(model or meta.model, kind, num_labels=len(LABELS) if kind == "classifier" else None)
    dept = DeptModel.load_adapter(base, Path(adapter_dir)).eval()
    return StepgamePredictor(dept.to(pick_device()), base.tokenizer, kind, dept.max_input_length,
                             batch_size=batch_size)


RECIPE = Recipe(task_format=TASK_FORMAT, name="dept", config_classes=CONFIG_CLASSES, setup=setup, check_point=check_point,
                prepare_fixed=prepare_fixed, load_predictor=load_predictor,
                summary="decomposed prompt tuning: soft prompt + low-rank embedding offset (vanilla PT at r = 0)")

__all__ = ["RECIPE", "CONFIG_CLASSES", "DeptTaskConfig", "setup", "check_point", "load_predictor", "build_model",
           "resolve_kind"]
