"""Adapters as MLflow models: logged per trial, promoted to the registry, loaded back.

A trial logs its best adapter so far as plain artifacts under ``adapter/`` each time its metric
improves (cheap: a few small files) and tags the run with the step (``raypost.adapter_step``).
The registrable pyfunc model, whose ``artifacts=`` hold that folder, is logged once, by
``promote``, from the run's ``adapter/`` artifacts: logging a pyfunc model costs 0.1-1 s (the
first call in a process imports ``mlflow.pyfunc``), which every improving evaluation of every
trial used to pay while all ranks waited at the report. ``log_adapter_model`` logs both at once
(runs made that way, and by older raypost versions, are promoted from the model they carry).
"""

from __future__ import annotations

from pathlib import Path

from raypost.errors import TrackingError
from raypost.tracking.metric_keys import flat_name, mlflow_key, objective_value

MODEL_NAME = "model"
MODEL_URI_TAG = "raypost.model_uri"  # the pyfunc model logged from the adapter (by promote)
MODEL_STEP_TAG = "raypost.model_adapter_step"  # the adapter step that model was built from
ADAPTER_TAG = "raypost.adapter_step"  # step of the adapter in the run's adapter/ artifacts
ADAPTER_DIR = "adapter"
ALIAS = "champion"


MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # models from code: no pickle (see that file)


def log_adapter_artifacts(client, run_id: str, adapter_dir: Path, metric: str, value: float, step: int) -> None:
    """What a trial logs when its metric improves: the adapter folder as ``adapter/`` artifacts,
    then ``best_<metric>`` (MLflow key ``eval/best_accuracy`` for ``eval_accuracy``) and the adapter's
    step (one call), so promote finds the files complete."""
    import time

    from mlflow.entities import Metric, RunTag

    client.log_artifacts(run_id, str(adapter_dir), artifact_path=ADAPTER_DIR)
    client.log_batch(run_id, metrics=[Metric(mlflow_key(f"best_{metric}"), float(value), int(time.time() * 1000), step)],
                     tags=[RunTag(ADAPTER_TAG, str(step))])


def _signature():
    """Rows in, one predicted label per row out: what ``raypost predict`` and the pyfunc take."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    return ModelSignature(inputs=Schema([ColSpec(Array(DataType.string), "story"), ColSpec(DataType.string, "question")]),
                          outputs=Schema([ColSpec(DataType.string)]))


def log_adapter_model(run_id: str, tracking_uri: str, adapter_dir: Path, log_artifacts: bool = True) -> str:
    """Log ``adapter_dir`` as artifacts (unless ``log_artifacts=False``) and as a pyfunc model of
    ``run_id``; returns the model URI. The run's status and end time are left as they were."""
    import mlflow

    from raypost import __version__

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    if log_artifacts:
        client.log_artifacts(run_id, str(adapter_dir), artifact_path=ADAPTER_DIR)
    before = client.get_run(run_id).info
    with mlflow.start_run(run_id=run_id):  # the model is logged into the run's experiment
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts={"adapter": str(adapter_dir)},
            signature=_signature(),
            # raypost brings torch/transformers; skip MLflow's slow requirement inference
            pip_requirements=[f"raypost=={__version__}"])
    # leaving start_run() marked the run FINISHED now: put back its status (and end time)
    if before.status == "RUNNING" or before.end_time is None:
        client.update_run(run_id, status=before.status)
    else:
        client.set_terminated(run_id, status=before.status, end_time=before.end_time)
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def adapter_model_uri(client, run) -> str:
    """The pyfunc model of ``run``'s adapter: the one already logged if it holds the current
    ``adapter/`` artifacts, else logged now from them (promote does this once per adapter)."""
    import tempfile

    tags = run.data.tags
    step = tags.get(ADAPTER_TAG)
    if tags.get(MODEL_URI_TAG) and (step is None or tags.get(MODEL_STEP_TAG) == step):
        return tags[MODEL_URI_TAG]
    if step is None:
        raise TrackingError(f"run {run.info.run_id} has no logged adapter to promote")
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, ADAPTER_DIR, tmp)
        except Exception as exc:
            raise TrackingError(f"run {run_id}: cannot read its adapter/ artifacts ({type(exc).__name__}: "
                                f"{exc})") from None
        uri = log_adapter_model(run_id, client.tracking_uri, Path(local), log_artifacts=False)
    client.set_tag(run_id, MODEL_STEP_TAG, step)
    return uri


def best_trial_run(client, target: str, metric: str | None, mode: str | None):
    """The best trial of sweep ``target`` (or the run ``target`` itself) by ``metric`` (its flat
    name or its MLflow key: ``eval_accuracy`` or ``eval/accuracy``)."""
    from raypost.tracking import runs

    metric = flat_name(metric) if metric else None
    sweep = runs.find_sweep_run(client, target)
    if sweep is None:
        try:
            run = client.get_run(target)
        except Exception:
            raise TrackingError(f"no sweep or run named {target!r} in {client.tracking_uri}") from None
        return run, metric or run.data.params.get("metric", "eval_accuracy")
    objectives = runs.sweep_objectives(sweep)
    metric = metric or next(iter(objectives))
    mode = mode or objectives.get(metric, "max")
    candidates = [r for r in runs.trial_runs(client, sweep.info.run_id)
                  if ADAPTER_TAG in r.data.tags or MODEL_URI_TAG in r.data.tags]
    scored = [(objective_value(r, metric), r) for r in candidates]
    scored = [(value, r) for value, r in scored if value is not None]
    if not scored:
        raise TrackingError(f"metric {metric!r} was not logged by any finished trial of sweep {target!r}")
    return (max if mode == "max" else min)(scored, key=lambda vr: vr[0])[1], metric


def promote(client, target: str, name: str, metric: str | None = None, mode: str | None = None,
            alias: str = ALIAS):
    """Register the best trial's adapter as a new version of ``name`` and point ``alias`` at it."""
    import mlflow

    run, metric = best_trial_run(client, target, metric, mode)
    if ADAPTER_TAG not in run.data.tags and MODEL_URI_TAG not in run.data.tags:
        raise TrackingError(f"run {run.info.run_id} has no logged adapter to promote")
    mlflow.set_tracking_uri(client.tracking_uri)
    model_uri = adapter_model_uri(client, run)
    version = mlflow.register_model(model_uri, name)
    value = objective_value(run, metric)
    if value is None:
        raise TrackingError(f"run {run.info.run_id} has no metric {metric!r} to promote it by")
    sweep = run.data.tags.get("raypost.sweep", "")
    client.update_model_version(name, version.version, description=(
        f"{run.data.params.get('method', '?')} adapter on {run.data.params.get('model', '?')}: best {metric} "
        f"{value:.4g} at step {run.data.tags.get(ADAPTER_TAG, '?')} of trial {run.info.run_name!r}"
        + (f" in sweep {sweep!r}" if sweep else "") + ". Load it with mlflow.pyfunc.load_model or "
        f"`raypost predict models:/{name}@{alias}`; input rows have `story` and `question`."))
    for key, tag in {"metric": metric, "metric_value": value, "run_id": run.info.run_id,
                     "base_model": run.data.params.get("model", "?"), "method": run.data.params.get("method", "?"),
                     "sweep": run.data.tags.get("raypost.sweep", "")}.items():
        client.set_model_version_tag(name, version.version, key, str(tag))
    client.set_registered_model_alias(name, alias, version.version)
    return version, run, value
