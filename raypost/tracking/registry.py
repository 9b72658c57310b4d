"""Adapters as MLflow models: logged per trial, promoted to the registry, loaded back.

A trial's best adapter is logged twice from the same folder: as plain artifacts under
``adapter/`` (browsable in the UI) and as a pyfunc model whose ``artifacts=`` hold that
folder, because a registered version needs a logged model, not a bare artifact path.
"""

from __future__ import annotations

from pathlib import Path

from raypost.errors import TrackingError

MODEL_NAME = "model"
MODEL_URI_TAG = "raypost.model_uri"
ALIAS = "champion"


class AdapterModel:
    """Built lazily so importing this module does not import mlflow.pyfunc."""

    @staticmethod
    def create():
        import mlflow.pyfunc

        class _AdapterModel(mlflow.pyfunc.PythonModel):
            def load_context(self, context):
                from raypost.inference import load_predictor

                self.predictor = load_predictor(context.artifacts["adapter"])

            def predict(self, context, model_input, params=None):
                rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
                return self.predictor.predict(rows)

        return _AdapterModel()


def log_adapter_model(run_id: str, tracking_uri: str, adapter_dir: Path) -> str:
    """Log ``adapter_dir`` as artifacts and as a pyfunc model of ``run_id``; returns the model URI."""
    import mlflow

    from raypost import __version__

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    client.log_artifacts(run_id, str(adapter_dir), artifact_path="adapter")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=AdapterModel.create(), artifacts={"adapter": str(adapter_dir)},
            # raypost brings torch/transformers; skip MLflow's slow requirement inference
            pip_requirements=[f"raypost=={__version__}"])
    client.update_run(run_id, status="RUNNING")  # leaving start_run() marked the run FINISHED
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def best_trial_run(client, target: str, metric: str | None, mode: str | None):
    """The best trial of sweep ``target`` (or the run ``target`` itself) by ``metric``."""
    from raypost.tracking import runs

    sweep = runs.find_sweep_run(client, target)
    if sweep is None:
        try:
            run = client.get_run(target)
        except Exception:
            raise TrackingError(f"no sweep or run named {target!r} in {client.tracking_uri}") from None
        return run, metric or run.data.params.get("metric", "eval_accuracy")
    metric = metric or _sweep_metric(sweep)
    mode = mode or _sweep_mode(sweep, metric)
    candidates = [r for r in runs.trial_runs(client, sweep.info.run_id) if MODEL_URI_TAG in r.data.tags]
    scored = [r for r in candidates if f"best_{metric}" in r.data.metrics or metric in r.data.metrics]
    if not scored:
        raise TrackingError(f"metric {metric!r} was not logged by any finished trial of sweep {target!r}")

    def score(run):
        return run.data.metrics.get(f"best_{metric}", run.data.metrics.get(metric))

    return (max if mode == "max" else min)(scored, key=score), metric


def _sweep_metric(sweep_run) -> str:
    import json

    objectives = json.loads(sweep_run.data.params.get("objectives", '{"eval_accuracy": "max"}'))
    return next(iter(objectives))


def _sweep_mode(sweep_run, metric: str) -> str:
    import json

    return json.loads(sweep_run.data.params.get("objectives", "{}")).get(metric, "max")


def promote(client, target: str, name: str, metric: str | None = None, mode: str | None = None,
            alias: str = ALIAS):
    """Register the best trial's adapter as a new version of ``name`` and point ``alias`` at it."""
    import mlflow

    run, metric = best_trial_run(client, target, metric, mode)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise TrackingError(f"run {run.info.run_id} has no logged adapter model to promote")
    mlflow.set_tracking_uri(client.tracking_uri)
    version = mlflow.register_model(model_uri, name)
    value = run.data.metrics.get(f"best_{metric}", run.data.metrics.get(metric))
    for key, tag in {"metric": metric, "metric_value": value, "run_id": run.info.run_id,
                     "base_model": run.data.params.get("model", "?"), "method": run.data.params.get("method", "?"),
                     "sweep": run.data.tags.get("raypost.sweep", "")}.items():
        client.set_model_version_tag(name, version.version, key, str(tag))
    client.set_registered_model_alias(name, alias, version.version)
    return version, run, value
