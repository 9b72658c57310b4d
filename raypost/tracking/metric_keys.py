"""How raypost's metric names appear in MLflow, and how they are read back.

Inside raypost (recipes, the loop, Ray Tune, objectives, ``--metric``) a metric has one flat
name: ``eval_accuracy``, ``train_loss``, ``lr_prompt``. In MLflow the same value is logged under
a key grouped by prefix, which the UI turns into chart sections (docs/tracking.md, "Layout"):

    eval_accuracy -> eval/accuracy        best_eval_accuracy -> eval/best_accuracy
    train_loss    -> train/loss           lr_prompt          -> train/lr_prompt
    stepgame_acc_k1 -> stepgame/acc_k1    cpt_loss           -> cpt/loss
    tokens_per_s  -> system/tokens_per_s  (also train_s, cpu_s, peak_memory_mb, resumed_from_step)

Values that do not change along a run are not metric curves: ``trainable_params`` is a param,
the steps completed and the largest replica difference are tags (``STEP_TAG``,
``REPLICA_TAG``). ``run_metrics`` reads a run back under the flat names, constants included,
and also reads runs written before this layout (flat keys, ``step`` and ``replica_max_diff``
curves), so every reader works on old and new stores alike.
"""

from __future__ import annotations

SECTIONS = ("eval", "train", "stepgame", "cpt")  # <section>_<rest> -> <section>/<rest>; the UI shows them in this order
SYSTEM = ("tokens_per_s", "train_s", "cpu_s", "peak_memory_mb", "resumed_from_step")
RENAMED = {"pseudo_label_loss": "cpt/pseudo_label_loss"}  # PCP's stage-1 pseudo-labelling, beside cpt/loss
BEST = "best_"

STEP_TAG = "raypost.steps_completed"  # the step of the trial's last evaluation (its last report)
REPLICA_TAG = "raypost.replica_max_diff"  # largest replica difference over the run's evaluations
AS_TAGS = {"step": STEP_TAG, "replica_max_diff": REPLICA_TAG}
AS_PARAMS = ("trainable_params",)  # logged once with the run's params (recipes put it in TrialSetup.params)


def mlflow_key(name: str) -> str:
    """The MLflow key of the flat metric ``name`` (names of no known section stay as they are)."""
    if name.startswith(BEST):
        section, sep, rest = mlflow_key(name[len(BEST):]).partition("/")
        return f"{section}/{BEST}{rest}" if sep else name
    if name in RENAMED:
        return RENAMED[name]
    if name in SYSTEM:
        return f"system/{name}"
    if name.startswith("lr_"):
        return f"train/{name}"
    section, sep, rest = name.partition("_")
    return f"{section}/{rest}" if sep and rest and section in SECTIONS else name


def flat_name(key: str) -> str:
    """The inverse of ``mlflow_key``; a flat key (older stores) is returned unchanged."""
    for name, renamed in RENAMED.items():
        if key == renamed:
            return name
    section, sep, rest = key.partition("/")
    if not sep:
        return key
    if section == "system":
        return rest
    if section == "train" and rest.startswith("lr_"):
        return rest
    best = rest.startswith(BEST)
    rest = rest[len(BEST):] if best else rest
    name = f"{section}_{rest}" if section in SECTIONS else key
    return BEST + name if best else name


def split_constants(metrics: dict) -> tuple[dict, dict]:
    """A loop report split into (metric curves keyed for MLflow, tags); constants logged as params
    (``AS_PARAMS``) are dropped."""
    curves = {mlflow_key(k): v for k, v in metrics.items() if k not in AS_TAGS and k not in AS_PARAMS}
    tags = {AS_TAGS[k]: v for k, v in metrics.items() if k in AS_TAGS}
    return curves, tags


def run_metrics(run) -> dict[str, float]:
    """A run's latest metric values under their flat names, with the constants kept as params
    and tags read back (``step``, ``replica_max_diff``, ``trainable_params``)."""
    # a trial resumed across the change to grouped keys has both; the grouped (newer) one wins
    ordered = sorted(run.data.metrics.items(), key=lambda kv: "/" in kv[0])
    out = {flat_name(k): v for k, v in ordered}
    for name, tag in AS_TAGS.items():
        if tag in run.data.tags:
            out[name] = float(run.data.tags[tag])
    for name in AS_PARAMS:
        try:
            out.setdefault(name, float(run.data.params[name]))
        except (KeyError, ValueError):
            pass
    return out


def objective_value(run, metric: str) -> float | None:
    """The value a run is ranked by for ``metric`` (a flat name, or its MLflow key): its best
    (``best_<metric>``), else its latest."""
    values, metric = run_metrics(run), flat_name(metric)
    return values.get(BEST + metric, values.get(metric))
