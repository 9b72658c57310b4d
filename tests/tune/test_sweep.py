"""A real sweep on local Ray: Optuna + ASHA, 2 DeepSpeed workers per trial, MLflow records.

Uses the synthetic recipe (seconds per trial) so the orchestration is what is tested. The space
is built so ASHA *must* stop trials: the first point learns (lr 0.1), the others cannot (lr 0).
"""

from __future__ import annotations

import yaml

from raypost.train.launch import Scaling
from raypost.tune.space import validate_space
from raypost.tune.sweep import SweepOptions, run_sweep

SPACE = {
    "method": "raypost.recipes.synthetic",
    "samples": 3,
    "scheduler": "asha",
    "points_to_evaluate": [{"lr": 0.1}, {"lr": 0.0}, {"lr": 0.0}],
    "fixed": {"steps": 40, "eval_every": 10, "batch_size": 16, "zero_stage": 1},
    "search": {"lr": {"type": "categorical", "values": [0.0, 0.1]}},
}


def test_sweep_two_workers_asha_mlflow(ray_cluster, tmp_path, tracking_uri, mlflow_client):
    space = validate_space(SPACE, SPACE["method"])
    opts = SweepOptions(name="sweep-a", storage=str(tmp_path / "ray"), tracking_uri=tracking_uri,
                        scaling=Scaling(workers=2), samples=3, scheduler="asha", max_failures=0)
    results, summary = run_sweep(space, opts)

    assert len(results) == 3 and not any(r.error for r in results)
    parent = mlflow_client.search_runs(
        [e.experiment_id for e in mlflow_client.search_experiments()],
        filter_string="tags.`raypost.role` = 'sweep'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    trials = mlflow_client.search_runs(
        [parent[0].info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'")
    assert len(trials) == 3
    assert len({t.data.tags["raypost.trial_id"] for t in trials}) == 3
    # what the MLflow UI shows: a training-runs experiment, who ran it and from what, readable names
    assert mlflow_client.get_experiment(parent[0].info.experiment_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"
    for run in (*parent, *trials):
        assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"].startswith("raypost sweep ")
    assert sorted(t.info.run_name.rsplit(" [", 1)[0] for t in trials) == ["synthetic lr=0", "synthetic lr=0", "synthetic lr=0.1"]

    histories = {}
    for t in trials:
        # every trial reported its metric; DeepSpeed's ZeRO optimizer ran on 2 workers
        assert t.data.params["world_size"] == "2"
        assert t.data.params["optimizer"] == "DeepSpeedZeroOptimizer"
        assert t.data.params["trainable_params"] == str(16 * 4 * 2)
        hist = mlflow_client.get_metric_history(t.info.run_id, "eval/accuracy")
        histories[t.data.params["lr"]] = histories.get(t.data.params["lr"], []) + [hist]
        assert [m.step for m in hist] == sorted(m.step for m in hist) and hist[0].step == 10
        # both ranks hold identical trainable weights after every step (gradients averaged)
        # (the largest difference over all evaluations, a tag: a constant is not a metric curve)
        assert float(t.data.tags["raypost.replica_max_diff"]) == 0.0
        assert int(t.data.tags["raypost.steps_completed"]) == hist[-1].step
        assert len(mlflow_client.get_metric_history(t.info.run_id, "train/loss")) >= 10
        assert mlflow_client.get_metric_history(t.info.run_id, "system/tokens_per_s")[-1].value > 0
        # every curve sits in a chart section (eval/, train/, system/, ...); no constant is one
        assert all("/" in k for k in t.data.metrics), sorted(t.data.metrics)

    good = histories["0.1"][0]
    assert [m.step for m in good] == [10, 20, 30, 40]
    assert good[-1].value > 0.5  # it learned
    stopped = [t for t in trials if t.data.tags.get("raypost.stopped_early") == "true"]
    assert len(stopped) >= 1 and all(t.data.params["lr"] == "0.0" for t in stopped)
    for t in stopped:
        assert len(mlflow_client.get_metric_history(t.info.run_id, "eval/accuracy")) < 4

    best_id = parent[0].data.tags["raypost.best_run_id"]
    best = mlflow_client.get_run(best_id)
    assert best.data.params["lr"] == "0.1"
    assert parent[0].data.metrics["eval/best_accuracy"] == best.data.metrics["eval/best_accuracy"] == good[-1].value
    assert yaml.safe_load((tmp_path / "ray" / "sweep-a" / "best_config.yaml").read_text())["lr"] == 0.1
    assert "adapter.safetensors" in {a.path.split("/")[-1] for a in mlflow_client.list_artifacts(best_id, "adapter")}
    # the adapter is logged as plain artifacts when the metric improves; the pyfunc model is built
    # from them by `raypost promote` (tests/tracking/test_registry.py), not during the trial
    assert int(best.data.tags["raypost.adapter_step"]) in (10, 20, 30, 40)
    assert "raypost.model_uri" not in best.data.tags
    parent_files = {a.path for a in mlflow_client.list_artifacts(parent[0].info.run_id)}
    assert {"search_space.yaml", "best_config.yaml", "summary.md", "optuna"} <= parent_files
    plots = {a.path.split("/")[-1] for a in mlflow_client.list_artifacts(parent[0].info.run_id, "optuna")}
    assert {"optimization_history.png", "parallel_coordinates.png", "optimization_history.html",
            "parallel_coordinates.html", "trials.json"} <= plots
    assert "best eval_accuracy" in summary and best_id in summary
